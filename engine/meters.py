"""Progress of a run: running averages of scalars, a log-friendly progress bar, durations as text.

``AverageMeter`` is timm's (the original used it for loss, grad norm and times); the bar is new.
"""
from __future__ import annotations

import datetime
import sys
import time
from typing import Optional


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


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (days when longer)."""
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


class ProgressBar:
    """A one-line progress bar with rate and ETA on stderr.

    On a terminal it redraws in place; otherwise (log files, CI) it prints a line every 10% so that logs
    stay readable.

    Args:
        total: number of steps (None = unknown: no percentage, no ETA).
        desc: label in front of the bar.
        enabled: False on ranks other than 0.
    """

    def __init__(self, total: Optional[int], desc: str = '', enabled: bool = True) -> None:
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.done = 0
        self.start = time.time()
        self._tty = sys.stderr.isatty()
        self._last_decile = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._tty:
            sys.stderr.write('\r' + self._line())
            sys.stderr.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else -1
        if decile > self._last_decile:
            self._last_decile = decile
            sys.stderr.write(self._line() + '\n')
            sys.stderr.flush()

    def _line(self) -> str:
        elapsed = time.time() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 24
            fill = int(width * frac)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            return (f"{self.desc} [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                    f"{100 * frac:5.1f}% {rate:.2f} it/s elapsed {format_duration(elapsed)} eta {format_duration(eta)}")
        return f"{self.desc} {self.done} it {rate:.2f} it/s elapsed {format_duration(elapsed)}"

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write('\n')
            sys.stderr.flush()
