"""A log-friendly progress bar with rate and ETA, and durations as text (used by evaluation and the data tools)."""
from __future__ import annotations

import datetime
import sys
import time
from typing import Optional


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
