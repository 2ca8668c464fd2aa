"""Progress bars go to terminals only: a log file or a pipe (fine-tune logs, schedulers, CI) gets no bar lines."""
import io
import sys

from utils.progress import ProgressBar


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_bars_are_drawn_on_terminals_only(monkeypatch):
    for tty in (False, True):
        err = _Stream(tty)
        monkeypatch.setattr(sys, 'stderr', err)
        monkeypatch.setattr(sys, 'stdout', _Stream(tty))
        # the evaluation's and the data tools' bars (not tty_only) as well as training's
        for tty_only in (False, True):
            bar = ProgressBar(10, desc='val', tty_only=tty_only)
            for _ in range(10):
                bar.update()
            bar.close()
        assert bool(err.getvalue()) == tty, err.getvalue()
        if tty:
            assert 'val [' in err.getvalue() and '10/10' in err.getvalue()
