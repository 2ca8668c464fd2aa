"""``MODEL.INIT``: the initialisation of the Linear layers, applied before any checkpoint is loaded."""
from __future__ import annotations

import logging

from torch import nn

from engine.config import ConfigError

_logger = logging.getLogger(__name__)

WEIGHT_INITS = ('original', 'xavier')


def apply_weight_init(model: nn.Module, scheme: str) -> None:
    """``MODEL.INIT``: ``original`` keeps the model's own initialisation (Linear ~ trunc-normal std 0.02);
    ``xavier`` re-draws every Linear weight xavier-uniform with a zero bias.

    Why: in the focal modulation the output is the product ``q * modulator * modulator_temporal`` of
    three Linear-fed terms; with std 0.02 at widths of 16-128 (the toy model) each term is ~0.01-0.1,
    so the modulation, the only place where frames interact, starts ~1e-6 of the residual stream and a
    model trained from scratch memorises through its MLPs instead. With xavier the toy model learns
    the temporal classes within minutes; the published widths start from ImageNet weights anyway.
    """
    if scheme not in WEIGHT_INITS:
        raise ConfigError(f"MODEL.INIT: expected one of {list(WEIGHT_INITS)}, got {scheme!r}")
    if scheme == 'original':
        return
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            count += 1
    _logger.info(f'MODEL.INIT {scheme}: re-initialised {count} Linear layers')
