"""Running averages of a run's scalars (``AverageMeter``, timm's: the original used it for loss, grad norm
and times). The progress bar and duration formatting live in ``utils.progress`` (the data tools use them too).
"""
from __future__ import annotations


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
