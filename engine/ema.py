"""Exponential moving average of the model weights (new; the original had none).

``ema = decay * ema + (1 - decay) * weights`` after every optimizer update, in float32 whatever AMP
does, on the model's device. Buffers are copied. The averaged copy is an ordinary module in eval mode,
so it is validated with the same code as the model and saved in checkpoints under ``ema``.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn


class ModelEma:
    """A frozen copy of ``model`` that tracks the average of its weights.

    Args:
        model: the bare model (not DDP / compiled); its current weights start the average.
        decay: weight of the old average per update (``TRAIN.EMA_DECAY``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"TRAIN.EMA_DECAY: expected a value in [0, 1], got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (call after each optimizer step)."""
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise RuntimeError("ModelEma.update: the model's parameters do not match the EMA copy's")
        floating = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floating:
            torch._foreach_lerp_([e for e, _ in floating], [p.to(e.dtype) for e, p in floating], 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> Dict[str, Any]:
        return {'model': self.module.state_dict(), 'decay': self.decay, 'num_updates': self.num_updates}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state['model'])
        self.num_updates = int(state.get('num_updates', 0))
