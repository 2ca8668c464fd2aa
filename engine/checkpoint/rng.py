"""RNG state of a process as plain data: what an exact resume restores.

Python, NumPy (legacy global generator), torch CPU and every CUDA device, as tensors and plain values, so a
checkpoint holding them loads with ``weights_only=True``. Saved per rank (``rng_per_rank``, see
``engine/checkpoint/schema.py``); ``engine/resume.py`` picks this rank's and restores it.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, Mapping

import numpy as np
import torch

from engine.checkpoint.loading import CheckpointError

_logger = logging.getLogger(__name__)


def capture_rng_state() -> Dict[str, Any]:
    """RNG states of Python, numpy (legacy global generator), torch CPU and every CUDA device, as tensors and
    plain values (so a checkpoint holding them loads with ``weights_only=True``)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: Dict[str, Any] = {
        'python': [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
        'numpy': [str(np_kind), torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured; entries that are absent are left alone.

    CUDA states are restored only when the number of visible devices matches (otherwise logged).
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f'RNG state: expected a dict from capture_rng_state(), found {type(state).__name__}')
    if 'python' in state:
        version, internal, gauss = state['python']
        random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    if 'numpy' in state:
        kind, keys, pos, has_gauss, gauss = state['numpy']
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if 'torch' in state:
        torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        if len(state['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])
        else:
            _logger.warning('not restoring CUDA RNG states: saved for %d devices, %d visible',
                            len(state['cuda']), torch.cuda.device_count())
