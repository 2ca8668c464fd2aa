"""A terminal progress bar with rate and ETA, and durations as text (used by training, evaluation and the data tools).

Training and evaluation draw nothing into log files; the data tools (``datasets.resize``,
``tools.extract_features``: long unattended jobs, often run with ``nohup`` or in a batch job) write a line
every 10% there instead, so that their log says how far they got."""
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

    Drawn on terminals: it redraws in place on stderr when that is a terminal. When stderr goes to a file or
    a pipe (a log, a batch scheduler, CI), where redrawn lines would pile up, it draws nothing, or with
    ``log_lines`` one line every 10%.

    Args:
        total: number of steps (None = unknown: no percentage, no ETA).
        desc: label in front of the bar.
        enabled: False on ranks other than 0.
        initial: steps already done before this bar started (a resumed epoch); the rate counts the new ones.
        unit: what the rate counts (``it``, ``clips`` ...).
        unit_scale: units per step (e.g. clips per optimizer update).
        tty_only: draw only when stdout (where the log goes) is a terminal too.
        log_lines: off a terminal, print a line at every tenth of ``total`` instead of nothing.
    """

    def __init__(self, total: Optional[int], desc: str = '', enabled: bool = True, initial: int = 0,
                 unit: str = 'it', unit_scale: float = 1.0, tty_only: bool = False,
                 log_lines: bool = False) -> None:
        self.total = total
        self.desc = desc
        self._tty = sys.stderr.isatty()
        self.enabled = enabled and self._tty and (not tty_only or sys.stdout.isatty())
        self._log_lines = enabled and log_lines and not self._tty and bool(total)
        self._last_decile = int(10 * initial / total) if total and initial else -1
        self.initial = self.done = initial
        self.unit, self.unit_scale = unit, unit_scale
        self.start = time.time()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._log_lines:
            decile = int(10 * self.done / self.total)
            if decile > self._last_decile:
                self._last_decile = decile
                sys.stderr.write(self._line() + '\n')
                sys.stderr.flush()
            return
        self.refresh()

    def refresh(self) -> None:
        """Redraw the bar in place (terminals only)."""
        if self.enabled and self._tty:
            sys.stderr.write('\r' + self._line() + '\033[K')
            sys.stderr.flush()

    def clear(self) -> None:
        """Erase the bar from its line (terminals only), e.g. before a log line is printed; ``refresh`` redraws."""
        if self.enabled and self._tty:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()

    def _line(self) -> str:
        elapsed = time.time() - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        shown = f"{rate * self.unit_scale:.2f} {self.unit}/s"
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 24
            fill = int(width * frac)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            return (f"{self.desc} [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                    f"{100 * frac:5.1f}% {shown} elapsed {format_duration(elapsed)} eta {format_duration(eta)}")
        return f"{self.desc} {self.done} it {shown} elapsed {format_duration(elapsed)}"

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write('\n')
            sys.stderr.flush()
