"""``TRAIN.COMPILE``: ``torch.compile`` of the training and evaluation models, made safe under DDP.

Under DistributedDataParallel, TorchDynamo's DDP optimizer (``torch._dynamo.config.optimize_ddp``) splits the
compiled graph at DDP's gradient-bucket boundaries so that each bucket's all-reduce overlaps the rest of the
backward pass. Whether it can split graphs that hold activation checkpointing (a higher-order op) depends on
the torch release: older releases stop with a "higher order op" error on the first compiled step, while
torch 2.14 splits them (checked on 2 gloo ranks: a bucketed graph whose gradients equal eager DDP's, with
selective and with full checkpointing). So with checkpointing (``TRAIN.USE_CHECKPOINT`` or
``TRAIN.SELECTIVE_CHECKPOINT``, on by default) under DDP the DDP optimizer stays on from torch 2.14 on; on
older releases it is switched off: the model compiles as one graph and its gradients are all-reduced after
the backward pass (no overlap; the memory saving of checkpointing is kept). Without checkpointing, or in one
process, nothing changes.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Optional, Tuple

import torch

_logger = logging.getLogger(__name__)

# the first release verified to split checkpointed graphs at DDP's buckets (tests/test_device_settings.py)
DDP_OPTIMIZER_WITH_CHECKPOINTING_SINCE = (2, 14)


def torch_release(version: Optional[str] = None) -> Tuple[int, int]:
    """``(major, minor)`` of ``version`` (default: the installed torch, e.g. '2.14.1+cu130' -> (2, 14))."""
    match = re.match(r'(\d+)\.(\d+)', version or torch.__version__)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def uses_checkpointing(config: Any) -> bool:
    """Whether the training model recomputes activations (whole blocks or selectively)."""
    return bool(config.TRAIN.USE_CHECKPOINT or config.TRAIN.SELECTIVE_CHECKPOINT)


def configure_ddp_compile(distributed: bool, checkpointing: bool, version: Optional[str] = None) -> bool:
    """Switch TorchDynamo's DDP optimizer off when compiling a DDP model that checkpoints activations on a
    torch release that cannot split such graphs (``version``: default the installed one).

    Returns whether the DDP optimizer stays on. Call before the first compiled forward pass."""
    import torch._dynamo
    handles_checkpointing = torch_release(version) >= DDP_OPTIMIZER_WITH_CHECKPOINTING_SINCE
    if distributed and checkpointing and not handles_checkpointing and torch._dynamo.config.optimize_ddp:
        torch._dynamo.config.optimize_ddp = False
        _logger.info(f'TRAIN.COMPILE under DDP with activation checkpointing on torch {version or torch.__version__}: '
                     "TorchDynamo's DDP optimizer is off (this release cannot split checkpointed graphs at gradient "
                     'buckets); gradients are all-reduced after the backward pass')
    return bool(torch._dynamo.config.optimize_ddp)


def compile_for_training(model: torch.nn.Module, config: Any, distributed: bool, **compile_kwargs: Any) -> Any:
    """``torch.compile(model)`` for the training loop (``model`` may be the DDP wrapper)."""
    configure_ddp_compile(distributed, uses_checkpointing(config))
    return torch.compile(model, **compile_kwargs)
