"""Per-step learning-rate schedules: linear warm-up followed by cosine, linear or step decay.

The original used timm 0.5.4's ``CosineLRScheduler`` (and Swin's ``LinearLRScheduler`` / timm's
``StepLRScheduler``) stepped once per optimizer update. timm changed the cosine semantics after 0.5.4,
so the same call gives another curve today; this module computes the schedule itself, as a pure
function of the number of optimizer updates, so results do not depend on the installed timm.

How it differs from the original:

* ``TRAIN.LR_SCHEDULER.LEGACY_COSINE: True`` reproduces timm 0.5.4: the cosine is counted from update 0,
  so when warm-up ends the LR drops from ~BASE_LR to the cosine's value at that point (about
  0.933 x BASE_LR for 20 of 120 epochs). The default (False) starts the cosine where warm-up ends, so
  the LR is continuous (timm's ``warmup_prefix=True``).
* Units are optimizer updates (micro-batches / ACCUMULATION_STEPS), not micro-batches; without gradient
  accumulation the two are the same.
* The LR of update ``k`` is ``lr_at(k)`` and is set before that update. The original set it after the
  update with the index of the update just done, so its update ``k`` used ``lr_at(k - 1)`` (a lag of one
  step out of ~10^5, not reproduced).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List

import torch

_logger = logging.getLogger(__name__)

SCHEDULES = ('cosine', 'linear', 'step')
# Swin's LinearLRScheduler decays to this fraction of the base LR (hard-coded in the original).
LINEAR_MIN_RATE = 0.01


class WarmupLRScheduler:
    """Linear warm-up from ``warmup_lr`` to the base LR, then ``cosine``, ``linear`` or ``step`` decay.

    The base LR of each parameter group is read once, at construction, from the group's ``lr``
    (stored as ``initial_lr``), so groups with different LRs are scaled alike.

    Args:
        optimizer: the optimizer whose groups are updated in place.
        name: ``cosine`` | ``linear`` | ``step``.
        total_updates: optimizer updates of the whole run (EPOCHS x updates per epoch).
        warmup_updates: updates of linear warm-up (WARMUP_EPOCHS x updates per epoch).
        warmup_lr: LR at update 0.
        min_lr: LR at the end of the cosine (``cosine`` only).
        decay_updates: period of the ``step`` decay.
        decay_rate: factor of the ``step`` decay.
        legacy_cosine: count the cosine from update 0 (timm 0.5.4) instead of from the end of warm-up.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str, total_updates: int, warmup_updates: int = 0,
                 warmup_lr: float = 0.0, min_lr: float = 0.0, decay_updates: int = 1, decay_rate: float = 0.1,
                 legacy_cosine: bool = False) -> None:
        if name not in SCHEDULES:
            raise ValueError(f"TRAIN.LR_SCHEDULER.NAME: expected one of {list(SCHEDULES)}, got {name!r}")
        if total_updates < 1:
            raise ValueError(f"the schedule needs at least one optimizer update, got total_updates={total_updates}")
        self.optimizer = optimizer
        self.name = name
        self.total_updates = int(total_updates)
        self.warmup_updates = max(0, int(warmup_updates))
        self.warmup_lr = float(warmup_lr)
        self.min_lr = float(min_lr)
        self.decay_updates = max(1, int(decay_updates))
        self.decay_rate = float(decay_rate)
        self.legacy_cosine = bool(legacy_cosine)
        for group in optimizer.param_groups:
            group.setdefault('initial_lr', group['lr'])
        self.base_lrs: List[float] = [group['initial_lr'] for group in optimizer.param_groups]
        self.num_updates = 0
        self.step_update(0)

    def lr_at(self, t: int, base_lr: float) -> float:
        """LR of optimizer update ``t`` (0-based) for a group whose base LR is ``base_lr``."""
        if t < self.warmup_updates:
            return self.warmup_lr + t * (base_lr - self.warmup_lr) / self.warmup_updates
        if self.name == 'cosine':
            if t >= self.total_updates:
                return self.min_lr
            if self.legacy_cosine:
                progress = t / self.total_updates
            else:
                progress = (t - self.warmup_updates) / max(1, self.total_updates - self.warmup_updates)
            return self.min_lr + 0.5 * (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
        if self.name == 'linear':
            span = max(1, self.total_updates - self.warmup_updates)
            progress = min(1.0, (t - self.warmup_updates) / span)
            return base_lr - (base_lr - base_lr * LINEAR_MIN_RATE) * progress
        return base_lr * self.decay_rate ** (t // self.decay_updates)  # step: counted from update 0, as timm

    def step_update(self, num_updates: int) -> None:
        """Set every group's LR for optimizer update ``num_updates`` (the number of updates done so far)."""
        self.num_updates = int(num_updates)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group['lr'] = self.lr_at(self.num_updates, base_lr)

    def get_last_lr(self) -> List[float]:
        return [group['lr'] for group in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        return {'name': self.name, 'num_updates': self.num_updates, 'total_updates': self.total_updates,
                'warmup_updates': self.warmup_updates, 'warmup_lr': self.warmup_lr, 'min_lr': self.min_lr,
                'decay_updates': self.decay_updates, 'decay_rate': self.decay_rate,
                'legacy_cosine': self.legacy_cosine, 'base_lrs': list(self.base_lrs)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the position in the schedule.

        The shape of the schedule always comes from today's config; a stored schedule that differs
        (another EPOCHS, LR, world size) is reported, not adopted, so that a resumed run follows the
        command it was started with. A timm scheduler ``__dict__`` (the original's checkpoints) carries
        no update count of ours and is ignored.
        """
        if 'num_updates' not in state or 'total_updates' not in state:
            _logger.warning("lr_scheduler state in the checkpoint is not ours (timm layout?): ignored; "
                            "the position in the schedule follows from the resumed epoch")
            return
        for key in ('name', 'total_updates', 'warmup_updates', 'legacy_cosine'):
            if state.get(key) != getattr(self, key):
                _logger.warning(f"lr_scheduler: checkpoint has {key}={state.get(key)!r}, the config gives "
                                f"{getattr(self, key)!r}; following the config")
        self.step_update(int(state['num_updates']))


def build_scheduler(config: Any, optimizer: torch.optim.Optimizer, updates_per_epoch: int) -> WarmupLRScheduler:
    """The scheduler of ``config.TRAIN`` with epochs converted to optimizer updates."""
    sched = config.TRAIN.LR_SCHEDULER
    return WarmupLRScheduler(
        optimizer, name=sched.NAME,
        total_updates=int(config.TRAIN.EPOCHS * updates_per_epoch),
        warmup_updates=int(config.TRAIN.WARMUP_EPOCHS * updates_per_epoch),
        warmup_lr=config.TRAIN.WARMUP_LR, min_lr=config.TRAIN.MIN_LR,
        decay_updates=int(sched.DECAY_EPOCHS * updates_per_epoch), decay_rate=sched.DECAY_RATE,
        legacy_cosine=sched.LEGACY_COSINE)
