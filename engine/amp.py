"""Mixed precision: native ``torch.autocast`` with a ``GradScaler`` for fp16 only.

The original used apex O1; here ``TRAIN.AMP: none|fp16|bf16`` (``AMP_MODES``), and the apex levels of
``AMP_OPT_LEVEL`` / ``--amp-opt-level`` map onto it (``AMP_OPT_LEVELS``). bf16 has fp32's range and needs no
loss scaling.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any, Optional

import torch

_logger = logging.getLogger(__name__)

AMP_DTYPES = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
AMP_MODES = tuple(AMP_DTYPES)
AMP_OPT_LEVELS = {'O0': 'none', 'O1': 'fp16', 'O2': 'fp16'}


def amp_dtype(config: Any, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype of ``TRAIN.AMP`` on ``device`` (None = fp32); falls back to fp32 with a warning
    where the device cannot autocast to it."""
    dtype = AMP_DTYPES[config.TRAIN.AMP]
    if dtype is None:
        return None
    if device.type == 'cuda' and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        _logger.warning('TRAIN.AMP bf16: this GPU has no bf16 support; training in fp32')
        return None
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        _logger.warning(f'TRAIN.AMP {config.TRAIN.AMP}: autocast is not available on {device.type}; fp32')
        return None
    if device.type == 'cpu' and dtype == torch.float16:
        # honoured, but CPUs have few fp16 kernels (compare with --throughput --opts TRAIN.AMP fp16 / none / bf16)
        _logger.warning('TRAIN.AMP fp16 on the CPU is several times slower than fp32 (few fp16 CPU kernels): '
                        'add --opts TRAIN.AMP none (or bf16 where the CPU supports it)')
    return dtype


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` context for ``dtype`` (a no-op context for None)."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def build_grad_scaler(device: torch.device, dtype: Optional[torch.dtype]) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
