"""Writing checkpoints: plain data only, atomically, once per save and published under several names.

Differences from the original (``save_checkpoint``, spec 7.12, 7.14): checkpoints are written atomically
(``utils/fs.py``), hold only plain types (they load with ``weights_only=True``: the config is YAML text, RNG
states are tensors and lists), and one save is written once and published by hard links:
``ckpt_epoch_N.pth`` every ``SAVE_FREQ`` epochs and at the last epoch, ``best.pth`` when validation
improved, ``last.pth`` always and last of all, so ``last.pth`` is the commit point of an epoch.
"""
from __future__ import annotations

import collections
import logging
import os
from typing import Any, List, Mapping

import torch

from engine.checkpoint.loading import CheckpointError, PathLike
from utils.fs import atomic_write, publish_file, remove_stale_temp_files

_logger = logging.getLogger(__name__)

_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype,
                 torch.device)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back (numpy arrays, CfgNodes, ...)."""
    kind = type(obj)
    if kind in (dict, collections.OrderedDict):
        for k, v in obj.items():
            _check_plain(k, f'{where} key {k!r}')
            _check_plain(v, f'{where}[{k!r}]')
    elif kind in (list, tuple, set, frozenset):
        for i, v in enumerate(obj):
            _check_plain(v, f'{where}[{i}]')
    elif not (kind in _PLAIN_LEAVES or isinstance(obj, torch.Tensor)):
        raise CheckpointError(
            f'cannot save {where}: a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors and '
            f'plain Python values so that they load with weights_only=True')


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the file is either the previous one or the complete new one.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then renamed over ``path``
    (``os.replace``) and the folder is fsynced. A failure while writing removes the temporary file; one left by
    a killed process is removed on the next save. ``state`` may hold only tensors and plain Python values.
    """
    path = os.fspath(path)
    _check_plain(dict(state), 'state')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_stale_temp_files(path)
    atomic_write(path, lambda f: torch.save(dict(state), f))


def checkpoint_names(epoch: int, total_epochs: int, save_freq: int, improved: bool) -> List[str]:
    """File names a completed ``epoch`` is saved under, ``last.pth`` last (the commit point)."""
    names = []
    if (save_freq > 0 and epoch % save_freq == 0) or epoch == total_epochs - 1:
        names.append(f'ckpt_epoch_{epoch}.pth')
    if improved:
        names.append('best.pth')
    names.append('last.pth')
    return names


def write_checkpoint(output_dir: str, names: List[str], state: Mapping[str, Any]) -> List[str]:
    """Write ``state`` once under ``names[0]`` and publish it under the other names (in order)."""
    paths = [os.path.join(output_dir, name) for name in names]
    save_checkpoint(paths[0], state)
    for path in paths[1:]:
        publish_file(paths[0], path)
    _logger.info(f"saved {', '.join(paths)}")
    return paths
