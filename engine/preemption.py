"""Preemption and Ctrl-C: SIGTERM / SIGUSR1 / SIGINT become a flag that the run checks at safe points, for the
whole life of the process (``main.py`` installs it first and removes it last).

New (the original had no preemption handling). Where the flag is read:

* training: between optimizer updates; ``engine/trainer.py`` saves ``last.pth`` with the position inside the
  epoch (``epoch_step``) and raises :class:`PreemptedError`;
* evaluation (per-epoch validation, EMA validation, the final test, ``--eval``): after every batch
  (``engine/evaluator.py``). During validation the trainer saves ``last.pth`` as of the end of the epoch's
  updates, so the rerun validates that epoch first; the final test and ``--eval`` have nothing to save and
  just stop (the rerun tests again).

``main`` then calls :func:`finish_preempted`, and rerunning the same command continues
(``engine/resume.py``). Every rank agrees on the signal before acting (:meth:`PreemptionFlag.code` /
:meth:`PreemptionFlag.adopt`): SLURM may signal one task only, and the job must be requeued exactly once.

* SIGTERM (``scancel``, a scheduler's preemption, torchrun shutting down): exit code 0.
* SIGUSR1 (SLURM's warning before the time limit, ``sbatch --signal=USR1@120``): exit code 0, and inside a
  SLURM job rank 0 requeues it (``scontrol requeue $SLURM_JOB_ID``), so it continues from ``last.pth``.
* SIGINT (Ctrl-C): exit code 130, as for any program a terminal interrupts. Before anything reads the flag
  (start-up: the model being built, a checkpoint being loaded) every signal stops the run at once (nothing
  to save; SIGUSR1 still requeues); afterwards a second Ctrl-C
  does not wait for the save: it raises ``KeyboardInterrupt`` at once (``main`` exits 130 without a
  traceback; the checkpoint files are written atomically, so the previous ``last.pth`` stays whole).

The time from the signal to the exit is logged. The DataLoader workers ignore all three
(``datasets/loader.py``): a terminal, systemd and SLURM signal the whole process group, and a worker killed
first would turn the save into a "DataLoader worker killed" error.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from typing import Any, Dict, Iterator, Optional

logger = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a program stopped by Ctrl-C


class StoppedDuringStartup(BaseException):
    """SIGTERM / SIGUSR1 before anything reads the flag (start-up: the config, the model, a checkpoint being
    loaded): there is nothing to save, so the run stops at once. A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` on the way swallows it; ``main`` ends as after a save (0, a requeue on
    SIGUSR1)."""


class PreemptedError(Exception):
    """Raised once every rank agreed to stop on a signal; ``main`` exits with the signal's code.

    ``saved`` tells what the run kept: ``'state saved in last.pth'`` after a training save, or what was
    stopped when there was nothing to save (the final test, ``--eval``)."""

    def __init__(self, saved: str = 'state saved in last.pth') -> None:
        super().__init__(saved)
        self.saved = saved


# The agreed signal, when ranks got different ones: a requeue must happen if any rank was warned by SLURM, and
# Ctrl-C (someone at a terminal) outranks a plain SIGTERM.
_PRECEDENCE = ('SIGUSR1', 'SIGINT', 'SIGTERM')


class PreemptionFlag:
    """Turns SIGTERM / SIGUSR1 (cluster preemption, ``scancel``, torchrun shutting down) and SIGINT (Ctrl-C)
    into a flag.

    The run checks ``requested`` at safe points (optimizer-step boundaries, evaluation batches), saves what
    there is to save and exits cleanly. A second SIGTERM / SIGUSR1 is ignored; a SIGINT after any first
    signal raises ``KeyboardInterrupt`` (the user asks to stop now). While nothing defers signals
    (``defer_interrupts=False`` until :meth:`defer_interrupts` or :meth:`interrupts_deferred`: before the run
    reaches code that reads the flag, there is nothing to wait for), a first SIGINT raises ``KeyboardInterrupt``
    and a first SIGTERM / SIGUSR1 :class:`StoppedDuringStartup`. Handlers can only be installed from the main thread (elsewhere this is a no-op flag)."""

    SIGNALS = ('SIGTERM', 'SIGUSR1', 'SIGINT')

    def __init__(self, defer_interrupts: bool = True) -> None:
        self.requested = False
        self.signal_name = ''
        self.requested_at: Optional[float] = None   # time.monotonic() of the signal (or of the agreement)
        self._defer_interrupts = defer_interrupts
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

    def defer_interrupts(self) -> 'PreemptionFlag':
        """From now on a first Ctrl-C only sets the flag: code that reads it (training, evaluation) follows."""
        self._defer_interrupts = True
        return self

    @contextlib.contextmanager
    def interrupts_deferred(self) -> Iterator[None]:
        """A first Ctrl-C only sets the flag inside the block (a loop that reads it), as before it afterwards."""
        before, self._defer_interrupts = self._defer_interrupts, True
        try:
            yield
        finally:
            self._defer_interrupts = before

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and (self.requested or not self._defer_interrupts):
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = True
            self.signal_name = signal.Signals(signum).name
            self.requested_at = time.monotonic()
            if not self._defer_interrupts:  # nothing reads the flag yet: waiting for the first step gains nothing
                raise StoppedDuringStartup()

    def code(self, world_size: int) -> float:
        """This rank's signal as a number whose sum over ``world_size`` ranks tells which signals arrived
        (0: none): ranks add it to the flags they all-reduce anyway. See :meth:`adopt`."""
        if not self.requested or self.signal_name not in _PRECEDENCE:
            return 0.0
        base = world_size + 1   # a signal counted on every rank still fits below the next digit
        return float(base ** (len(_PRECEDENCE) - 1 - _PRECEDENCE.index(self.signal_name)))

    def adopt(self, total: float, world_size: int) -> bool:
        """Take the signal all ranks agree on from ``total``, the sum of every rank's :meth:`code`; True when
        any rank got one. A rank that got none itself stops all the same, on the agreed signal."""
        total_int = int(round(total))
        if total_int <= 0:
            return False
        base = world_size + 1
        counts = {name: (total_int // base ** (len(_PRECEDENCE) - 1 - i)) % base for i, name in enumerate(_PRECEDENCE)}
        self.signal_name = next(name for name in _PRECEDENCE if counts[name])
        self.requested = True
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        return True

    def seconds_since_signal(self) -> Optional[float]:
        return None if self.requested_at is None else time.monotonic() - self.requested_at

    def uninstall(self) -> None:
        global _PROCESS_FLAG
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if _PROCESS_FLAG is self:
            _PROCESS_FLAG = None


_PROCESS_FLAG: Optional[PreemptionFlag] = None


def process_flag(defer_interrupts: bool = True) -> PreemptionFlag:
    """The flag of this process: installed on first use and kept until its :meth:`PreemptionFlag.uninstall`,
    so that ``main``, the trainer and the evaluation loops read the same one. ``main`` installs it first,
    with ``defer_interrupts=False``: a Ctrl-C during start-up stops at once."""
    global _PROCESS_FLAG
    if _PROCESS_FLAG is None:
        _PROCESS_FLAG = PreemptionFlag(defer_interrupts).install()
    return _PROCESS_FLAG


def active_flag() -> Optional[PreemptionFlag]:
    """The process's flag when one is installed (a run of ``main.py``), else None (a library call)."""
    return _PROCESS_FLAG


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


def finish_preempted(signal_name: str, is_main: bool, saved: str = 'state saved in last.pth',
                     seconds: Optional[float] = None) -> int:
    """After the agreed stop: one line (what was kept, how long after the signal), the requeue of a SLURM job on
    SIGUSR1 (rank 0 only) and the exit code (130 after Ctrl-C, else 0)."""
    after = f' {seconds:.1f} s after {signal_name}' if seconds is not None and signal_name else ''
    if signal_name == 'SIGINT':
        logger.info(f'interrupted: {saved}{after}; exiting with code {EXIT_INTERRUPTED}')
        return EXIT_INTERRUPTED
    logger.info(f'preempted: {saved}{after}; exiting with code 0')
    job_id = os.environ.get('SLURM_JOB_ID', '')
    if signal_name == 'SIGUSR1' and job_id and is_main:
        requeue_slurm_job(job_id)
    return 0
