"""Preemption and Ctrl-C: SIGTERM / SIGUSR1 / SIGINT become a flag the training loop checks between
optimizer updates.

New (the original had no preemption handling): on the flag, ``engine/trainer.py`` saves ``last.pth`` with
the position inside the epoch (``epoch_step``) and raises :class:`PreemptedError`; ``main`` then calls
:func:`finish_preempted`, and rerunning the same command resumes exactly (``engine/resume.py``).

* SIGTERM (``scancel``, a scheduler's preemption, torchrun shutting down): exit code 0.
* SIGUSR1 (SLURM's warning before the time limit, ``sbatch --signal=USR1@120``): exit code 0, and inside a
  SLURM job rank 0 requeues it (``scontrol requeue $SLURM_JOB_ID``), so it continues from ``last.pth``.
* SIGINT (Ctrl-C): exit code 130, as for any program a terminal interrupts. A second Ctrl-C does not wait
  for the save: it raises ``KeyboardInterrupt`` at once (``main`` exits 130 without a traceback; the
  checkpoint files are written atomically, so the previous ``last.pth`` stays whole).

The DataLoader workers ignore all three (``datasets/loader.py``): a terminal, systemd and SLURM signal the
whole process group, and a worker killed first would turn the save into a "DataLoader worker killed" error.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any, Dict

logger = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a program stopped by Ctrl-C


class PreemptedError(Exception):
    """Raised after a preemption checkpoint was written; ``main`` exits with code 0."""


class PreemptionFlag:
    """Turns SIGTERM / SIGUSR1 (cluster preemption, ``scancel``, torchrun shutting down) and SIGINT (Ctrl-C)
    into a flag.

    The training loop checks ``requested`` at each optimizer-step boundary, saves ``last.pth`` with the
    position inside the epoch and exits cleanly. A second SIGTERM / SIGUSR1 while saving is ignored; a
    SIGINT after any first signal raises ``KeyboardInterrupt`` (the user asks to stop now). Handlers can
    only be installed from the main thread (elsewhere this is a no-op flag).
    """

    SIGNALS = ('SIGTERM', 'SIGUSR1', 'SIGINT')

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
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = True
            self.signal_name = signal.Signals(signum).name

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def requeue_slurm_job(job_id: str) -> bool:
    """``scontrol requeue JOB_ID``: SLURM ends this instance and queues the job again (same id, same
    command, SLURM_RESTART_COUNT + 1). Logs one line either way; True when scontrol accepted it."""
    try:
        proc = subprocess.run(['scontrol', 'requeue', job_id], capture_output=True, text=True, timeout=60)
        failure = '' if proc.returncode == 0 else ' '.join((proc.stderr or proc.stdout).split())
    except FileNotFoundError:  # a container without SLURM's client tools: the save stands, only the requeue is lost
        logger.warning(f'scontrol is not on PATH (SLURM client tools missing in this environment): SLURM job {job_id} '
                       'will not be requeued; submit the same sbatch command again to continue from last.pth')
        return False
    except (OSError, subprocess.TimeoutExpired) as e:
        failure = str(e)
    if failure:
        logger.warning(f'could not requeue SLURM job {job_id} (scontrol requeue: {failure}): it will not be '
                       'requeued; submit the same sbatch command again to continue from last.pth')
        return False
    logger.info(f'requeued SLURM job {job_id}: it continues from last.pth when SLURM starts it again')
    return True


def finish_preempted(signal_name: str, is_main: bool) -> int:
    """After the preemption save: one line, the requeue of a SLURM job on SIGUSR1 (rank 0 only), and the
    exit code (130 after Ctrl-C, else 0)."""
    if signal_name == 'SIGINT':
        logger.info(f'interrupted: state saved in last.pth; exiting with code {EXIT_INTERRUPTED}')
        return EXIT_INTERRUPTED
    logger.info('preempted: state saved in last.pth; exiting with code 0')
    job_id = os.environ.get('SLURM_JOB_ID', '')
    if signal_name == 'SIGUSR1' and job_id and is_main:
        requeue_slurm_job(job_id)
    return 0
