"""Preemption: SIGTERM / SIGUSR1 become a flag the training loop checks between optimizer updates.

New (the original had no preemption handling): on the flag, ``engine/trainer.py`` saves ``last.pth`` with
the position inside the epoch (``epoch_step``) and raises :class:`PreemptedError`; ``main`` then exits with
code 0, and rerunning the same command resumes exactly (``engine/resume.py``).
"""
from __future__ import annotations

import signal
from typing import Any, Dict


class PreemptedError(Exception):
    """Raised after a preemption checkpoint was written; ``main`` exits with code 0."""


class PreemptionFlag:
    """Turns SIGTERM / SIGUSR1 (cluster preemption, ``scancel``, torchrun shutting down) into a flag.

    The training loop checks ``requested`` at each optimizer-step boundary, saves ``last.pth`` with the
    position inside the epoch and exits cleanly. A second signal while saving is ignored; handlers can
    only be installed from the main thread (elsewhere this is a no-op flag).
    """

    SIGNALS = ('SIGTERM', 'SIGUSR1')

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ''
        self._previous: Dict[int, Any] = {}

    def install(self) -> 'PreemptionFlag':
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested = True
            self.signal_name = signal.Signals(signum).name

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
