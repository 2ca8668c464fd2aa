"""``TRAIN.COMPILE``: ``torch.compile`` of the training and evaluation models, made safe under DDP.

Under DistributedDataParallel, TorchDynamo's DDP optimizer (``torch._dynamo.config.optimize_ddp``) splits the
compiled graph at DDP's gradient-bucket boundaries so that all-reduces overlap the backward pass. It cannot
split graphs that hold activation checkpointing (a higher-order op): with several gradient buckets (every
published model size at DDP's default 25 MB buckets) compilation stops with an AssertionError or a
"higher order op" error, depending on the torch release. Selective checkpointing is on by default, so a
compiled multi-GPU run would crash on its first step. With checkpointing (``TRAIN.USE_CHECKPOINT`` or
``TRAIN.SELECTIVE_CHECKPOINT``) under DDP the DDP optimizer is therefore switched off: the model compiles as
one graph and its gradients are all-reduced after the backward pass instead of during it (the all-reduce no
longer overlaps compute; the memory saving is kept). Without checkpointing, or in one process, nothing changes.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

_logger = logging.getLogger(__name__)


def uses_checkpointing(config: Any) -> bool:
    """Whether the training model recomputes activations (whole blocks or selectively)."""
    return bool(config.TRAIN.USE_CHECKPOINT or config.TRAIN.SELECTIVE_CHECKPOINT)


def configure_ddp_compile(distributed: bool, checkpointing: bool) -> bool:
    """Switch TorchDynamo's DDP optimizer off when compiling a DDP model that checkpoints activations.

    Returns whether the DDP optimizer stays on. Call before the first compiled forward pass."""
    import torch._dynamo
    if distributed and checkpointing and torch._dynamo.config.optimize_ddp:
        torch._dynamo.config.optimize_ddp = False
        _logger.info('TRAIN.COMPILE under DDP with activation checkpointing: TorchDynamo\'s DDP optimizer is off '
                     '(it cannot split checkpointed graphs at gradient buckets); gradients are all-reduced after '
                     'the backward pass')
    return bool(torch._dynamo.config.optimize_ddp)


def compile_for_training(model: torch.nn.Module, config: Any, distributed: bool, **compile_kwargs: Any) -> Any:
    """``torch.compile(model)`` for the training loop (``model`` may be the DDP wrapper)."""
    configure_ddp_compile(distributed, uses_checkpointing(config))
    return torch.compile(model, **compile_kwargs)
