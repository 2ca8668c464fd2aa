"""A lock file in the run's output folder, so that two runs never write one folder unnoticed.

New (the original had none): two ``main.py`` started with the same output folder (the same command
submitted twice, a requeued SLURM job whose first instance still runs, a second terminal) would interleave
their checkpoints, logs and metrics. The first run writes ``OUTPUT/run.lock`` (JSON: host, PID, the PID's
start time, start time of the run, command line, SLURM job id and restart count); a second run is refused
with one line naming the file and its holder. A lock whose holder is known to be gone is taken over:

* same host and its PID no longer runs (or runs another program: the PID was reused), e.g. after
  ``kill -9`` or a crash;
* the same SLURM job with a lower SLURM_RESTART_COUNT: an earlier instance of a requeued job (that
  instance is gone whatever node it ran on: SLURM runs one instance of a job at a time);
* same host and this process's own PID with another start time: a restarted container, where the trainer
  gets the same low PID (often 1) again.

A ``run.lock`` that is a directory, empty, or not JSON with a holder is no lock a run wrote: it is refused
with a line that says which, since its holder cannot be judged. ``--throughput`` writes nothing and takes
no lock. On NFS, an ``EEXIST`` answer to the lock's hard link can be the retransmission of our own link
whose first reply was lost: when the temp file then has two links, the lock is ours.

A lock held on another host cannot be checked from here; it is refused, and the message says to delete
the file if that run is gone. Only rank 0 locks (the other ranks follow its decision, ``lock_run_folder``).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Dict, Optional

from utils import distributed as du

LOCK_NAME = 'run.lock'


class RunLockedError(RuntimeError):
    """The output folder is locked by another run (one line, naming the lock file and its holder)."""


def _process_start(pid: int) -> Optional[str]:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat); None where unknown.

    Stored next to the PID, it tells a live holder from an unrelated process that got the PID later."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(')') + 2:].split()  # the command name in (...) may hold spaces
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, start: Optional[str]) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f'/proc/{pid}/stat') as f:
            if f.read().rsplit(')', 1)[1].split()[0] == 'Z':  # a zombie: dead, only not reaped yet
                return False
    except (OSError, IndexError):
        pass
    return start is None or _process_start(pid) in (None, start)


def _holder_text(info: Dict[str, Any]) -> str:
    text = f"host {info.get('host', '?')}, PID {info.get('pid', '?')}, started {info.get('started', '?')}"
    if info.get('slurm_job_id'):
        text += f", SLURM job {info['slurm_job_id']}"
    return text


def _stale_reason(info: Dict[str, Any], mine: Dict[str, Any]) -> str:
    """Why the run that wrote ``info`` is known to be gone, or '' when it may still run."""
    if info.get('slurm_job_id') and info.get('slurm_job_id') == mine.get('slurm_job_id') \
            and int(info.get('slurm_restart_count') or 0) < int(mine.get('slurm_restart_count') or 0):
        return 'an earlier instance of this requeued SLURM job'
    if info.get('host') == mine['host']:
        try:
            pid = int(info.get('pid'))
        except (TypeError, ValueError):
            return ''
        if pid != mine['pid'] and not _pid_alive(pid, info.get('pid_start')):
            return f'PID {pid} no longer runs on this host'
        if pid == mine['pid'] and info.get('pid_start') and mine.get('pid_start') \
                and str(info['pid_start']) != str(mine['pid_start']):
            # our own PID in an old lock: a restarted container numbers its processes from 1 again
            return f'PID {pid} is this process now, started after that run (a restarted container)'
    return ''


class RunLock:
    """``OUTPUT/run.lock`` held by this process: ``acquire`` or ``RunLockedError``; ``release`` when done."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, LOCK_NAME)
        self.info: Dict[str, Any] = {
            'host': socket.gethostname(), 'pid': os.getpid(), 'pid_start': _process_start(os.getpid()),
            'started': time.strftime('%Y-%m-%d %H:%M:%S %z'), 'command': ' '.join(sys.argv),
            'slurm_job_id': os.environ.get('SLURM_JOB_ID', ''),
            'slurm_restart_count': os.environ.get('SLURM_RESTART_COUNT', '0')}
        self.held = False
        self.made_folders: list = []  # the folders acquire() created, innermost first

    def _create(self) -> bool:
        """Create the lock with its content in one step (a hard link of a finished file); False if it exists."""
        tmp = f'{self.path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as f:
            f.write(json.dumps(self.info) + '\n')
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            # NFS: a link whose reply was lost is sent again and answered EEXIST although the first one made
            # the link; then the temp file has two names and the lock is ours
            try:
                return os.stat(tmp).st_nlink == 2
            except OSError:
                return False
        except OSError:  # a file system without hard links: exclusive create (content follows at once)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, 'w') as f:
                f.write(json.dumps(self.info) + '\n')
            return True
        finally:
            os.remove(tmp)

    def _read(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            with open(path) as f:
                info = json.loads(f.read())
            return info if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or torn: treated as held by an unknown run

    def _not_a_lock(self) -> str:
        """What the lock path holds when it is no lock a run wrote: 'a directory', 'empty', ...; '' otherwise."""
        if os.path.isdir(self.path):
            return 'a directory, not a lock file'
        try:
            with open(self.path, 'rb') as f:
                data = f.read(1 << 16)
        except FileNotFoundError:
            return ''
        except OSError as e:
            return f'unreadable ({e.strerror or e})'
        if not data.strip():
            return 'empty'
        try:
            info = json.loads(data.decode('utf-8'))
        except (UnicodeDecodeError, ValueError):
            return 'not a lock file (its content is not the JSON a run writes)'
        return '' if isinstance(info, dict) and 'pid' in info else 'not a lock file (no holder recorded in it)'

    def acquire(self) -> 'RunLock':
        folder = os.path.dirname(self.path) or '.'
        missing, parent = [], os.path.abspath(folder)
        while not os.path.isdir(parent):  # e.g. OUTPUT/<dataset>/<model>/<tag> of a first run: all of them
            missing.append(parent)
            parent = os.path.dirname(parent)
        os.makedirs(folder, exist_ok=True)
        self.made_folders = missing
        for attempt in range(3):  # the holder may release, or another run take over, between our steps
            if self._create():
                self.held = True
                return self
            info = self._read(self.path)
            if info is None:
                continue
            problem = self._not_a_lock()
            if problem == 'empty' and attempt < 2:  # a run creating it without hard links writes its content next
                time.sleep(0.5)
                continue
            if problem:
                raise RunLockedError(f'{self.path}: the lock file is {problem}, so no run can be named as its '
                                     'holder; delete it if no other run uses this output folder')
            reason = _stale_reason(info, self.info)
            if not reason:
                raise RunLockedError(
                    f'{self.path}: the output folder is in use by another run ({_holder_text(info)}); wait for it, '
                    'choose another --output / --tag, or delete the file if that run is gone')
            # take over: move the stale lock aside, then make sure it was the one judged (another run may
            # have taken it over and written its own in between)
            aside = f'{self.path}.stale.{os.getpid()}'
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            if self._read(aside) != info:
                os.rename(aside, self.path) if not os.path.exists(self.path) else os.remove(aside)
                continue
            os.remove(aside)
            print(f'{self.path}: taking over the lock of a run that is gone ({_holder_text(info)}: {reason})',
                  file=sys.stderr)
        raise RunLockedError(f'{self.path}: the output folder lock changed hands repeatedly; another run is '
                             'starting in the same folder')

    def release(self) -> None:
        """Remove the lock if it is still this process's (a run that took it over keeps its own), and the
        folders too when ``acquire`` made them and the run left nothing in them (it stopped before starting)."""
        if self.held and self._read(self.path) == self.info:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            for made in self.made_folders:  # innermost first; stops at the first one the run wrote into
                try:
                    os.rmdir(made)
                except OSError:  # not empty: the run wrote its files there
                    break
        self.held = False


def lock_run_folder(folder: str) -> Optional[RunLock]:
    """Lock ``folder`` for this run: rank 0 takes the lock, every rank learns the outcome.

    Returns the held lock on rank 0 (None elsewhere); raises ``RunLockedError`` on every rank when rank 0
    was refused, so that no rank goes on to wait in a collective for a rank that stopped."""
    lock, error = None, ''
    if du.get_rank() == 0:
        try:
            lock = RunLock(folder).acquire()
        except RunLockedError as e:
            error = str(e)
        except OSError as e:  # e.g. a read-only or missing parent folder
            error = f'{os.path.join(folder, LOCK_NAME)}: cannot create the run lock ({e.strerror or e})'
    error = du.all_gather_object(error)[0]
    if error:
        raise RunLockedError(error)
    return lock


def release_run_lock(lock: Optional[RunLock]) -> None:
    if lock is not None:
        lock.release()
