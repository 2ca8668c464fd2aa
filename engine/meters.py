"""Running averages of a run's scalars (``AverageMeter``, timm's: the original used it for loss, grad norm
and times). The progress bar and duration formatting live in ``utils.progress`` (the data tools use them too).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping

# the meters of a training epoch (engine/trainer.py); a mid-epoch checkpoint carries their sums
EPOCH_METERS = ('loss', 'grad_norm', 'step_time', 'data_time')


class AverageMeter:
    """Current value and running average of a scalar."""

    def __init__(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def state_dict(self) -> Dict[str, Any]:
        """The running sums as plain numbers: a mid-epoch checkpoint carries them, so that the epoch's averages
        after a resume are those of an uninterrupted epoch (not of its updates after the resume)."""
        return {'val': self.val, 'sum': self.sum, 'count': self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.val, self.sum, self.count = float(state['val']), float(state['sum']), int(state['count'])


def meter_state_problem(state: Any) -> str:
    """'' when ``state`` is what :meth:`AverageMeter.state_dict` gives (finite sums, a count >= 0), else why not."""
    if not isinstance(state, Mapping) or set(state) != {'val', 'sum', 'count'}:
        return 'expected {val, sum, count}'
    numbers = [state['val'], state['sum']]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return f'val / sum {numbers!r} are not finite numbers'
    if not isinstance(state['count'], int) or isinstance(state['count'], bool) or state['count'] < 0:
        return f"count {state['count']!r} is not an integer >= 0"
    return ''
