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


def test_data_tools_write_a_line_every_tenth_into_a_log(monkeypatch):
    """Long unattended data jobs (resize, feature extraction) say in their log how far they got: a line at the
    first update, then one at every tenth."""
    err = _Stream(False)
    monkeypatch.setattr(sys, 'stderr', err)
    bar = ProgressBar(20, desc='resize', log_lines=True)
    for _ in range(20):
        bar.update()
    bar.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith('resize [') and '20/20' in lines[-1] and 'eta' in lines[-1]
