"""SGD / AdamW with a weight-decay group and a no-decay group.

How it differs from the original: the original asked the model for ``no_weight_decay_keywords()``,
got ``{''}`` back, and since the empty string is a substring of every name it put every parameter in
the no-decay group: ``WEIGHT_DECAY`` was silently 0. Here the no-decay group is what the original
meant (1-D parameters, biases and the names in ``model.no_weight_decay()``) and ``WEIGHT_DECAY`` is
applied as configured. The published recipe therefore sets ``WEIGHT_DECAY: 0.0`` to reproduce the
released models (see configs/_base_/published_recipe.yaml). Nesterov follows ``TRAIN.OPTIMIZER.NESTEROV``
(the original always used it).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Set

import torch
from torch import nn

_logger = logging.getLogger(__name__)

OPTIMIZERS = ('sgd', 'adamw')  # TRAIN.OPTIMIZER.NAME (case-insensitive)


def _skip_list(model: nn.Module) -> Set[str]:
    names = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else set()
    return set(names or ())


def _skip_keywords(model: nn.Module) -> Set[str]:
    keywords = model.no_weight_decay_keywords() if hasattr(model, 'no_weight_decay_keywords') else set()
    # '' would match every name: the original's bug. Ignore empty keywords instead of disabling decay.
    return {k for k in (keywords or ()) if k}


def param_groups_weight_decay(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Split trainable parameters into ``[decay group, no-decay group]`` (empty groups are dropped)."""
    skip = _skip_list(model)
    keywords = _skip_keywords(model)
    decay: List[nn.Parameter] = []
    no_decay: List[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith('.bias') or name in skip or any(k in name for k in keywords):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
    return [g for g in groups if g['params']]


def build_optimizer(config: Any, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``config.TRAIN.OPTIMIZER`` over ``model``'s parameters, LR = ``TRAIN.BASE_LR``.

    Build it on the bare model (before DDP / ``torch.compile``) so parameter names carry no wrapper prefix.
    """
    opt = config.TRAIN.OPTIMIZER
    groups = param_groups_weight_decay(model, config.TRAIN.WEIGHT_DECAY)
    name = opt.NAME.lower()
    lr = config.TRAIN.BASE_LR
    if name == 'sgd':
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=opt.MOMENTUM, nesterov=bool(opt.NESTEROV))
    elif name == 'adamw':
        optimizer = torch.optim.AdamW(groups, lr=lr, eps=opt.EPS, betas=tuple(opt.BETAS))
    else:
        raise ValueError(f"TRAIN.OPTIMIZER.NAME: expected one of {list(OPTIMIZERS)}, got {opt.NAME!r}")
    sizes = [sum(p.numel() for p in g['params']) for g in groups]
    _logger.info(f"optimizer {name}: lr {lr:.3g}, weight decay {config.TRAIN.WEIGHT_DECAY:g} on "
                 f"{sizes[0] if len(groups) == 2 else 0} parameters, none on {sizes[-1]}")
    return optimizer


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Total L2 norm of the gradients before clipping; clips to ``max_norm`` when it is > 0."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm and max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])
