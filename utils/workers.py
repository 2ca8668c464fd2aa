"""Helper processes that end with their parent and leave stop signals to it.

New (the original had neither): DataLoader workers and the pool workers of ``datasets.resize`` are forked
children that go on after their parent is killed (``kill -9``, the OOM killer, a node agent): a pool worker
finished its queue and then waited forever, a DataLoader worker noticed after its next 5 s status check. And
a signal sent to the whole process group (Ctrl-C in a terminal, systemd, SLURM) reached the DataLoader
workers too and killed them before the trainer could save.
"""
from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Optional

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = ('SIGINT', 'SIGTERM', 'SIGUSR1')


def parent_pid() -> int:
    """The pid of the process that started this one (multiprocessing's parent, else the OS parent)."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def exit_with_parent(parent: Optional[int] = None, poll_s: float = 1.0) -> None:
    """Make this process end (SIGKILL) as soon as ``parent`` (default: ``parent_pid()``) is gone.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, which the kernel delivers when the thread that forked us
    ends (DataLoader and process-pool workers are started from the thread that iterates / submits, the main
    thread here). Elsewhere, or if prctl fails: a daemon thread that checks the parent every ``poll_s``
    seconds. Either way a parent that died before the call is caught at once."""
    parent = parent_pid() if parent is None else parent
    armed = False
    if sys.platform.startswith('linux'):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before prctl took effect (we were reparented)
        os._exit(1)
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(poll_s)
            os._exit(1)
        threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


def ignore_stop_signals() -> None:
    """Ignore SIGINT / SIGTERM / SIGUSR1 in a worker: the main process gets them too and decides (saves, then
    shuts its workers down). A worker of a killed main process still ends, through ``exit_with_parent``."""
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            signal.signal(signum, signal.SIG_IGN)


def kill_daemonic_children() -> None:
    """SIGKILL the daemonic multiprocessing children (DataLoader workers) still alive.

    At interpreter exit multiprocessing stops its daemonic children with SIGTERM and then joins them. Workers
    ignore SIGTERM (``ignore_stop_signals``), so a loader whose iterator was not shut down (an exception
    raised out of a loop over it, e.g. an unreadable video with TEST.ON_UNREADABLE error) would leave that
    join waiting forever. SIGKILL cannot be ignored; at exit nothing of a worker is needed any more. torch's
    SIGCHLD handler (which reports a killed worker as an error) is reset first."""
    children = [child for child in multiprocessing.active_children() if child.daemon]
    if children and hasattr(signal, 'SIGCHLD') and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
        child.join(timeout=5)


_exit_cleanup_registered = False


def kill_workers_at_exit() -> None:
    """Register :func:`kill_daemonic_children` to run at exit, before multiprocessing's own exit handler
    (atexit runs handlers last-registered first, and multiprocessing registers its handler on import)."""
    global _exit_cleanup_registered
    if not _exit_cleanup_registered:
        atexit.register(kill_daemonic_children)
        _exit_cleanup_registered = True
