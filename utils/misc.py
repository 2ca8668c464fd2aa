"""Small engine helpers: meters, progress bar, atomic file writes, seeding, environment summary,
preemption signals.

Nothing here has an equivalent in the original except ``AverageMeter`` (timm's) and the seeding,
which now also seeds Python's ``random`` and can switch on deterministic algorithms.
"""
from __future__ import annotations

import datetime
import logging
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

from utils.checkpoint import _fsync_dir  # one implementation of the folder fsync of an atomic rename

_logger = logging.getLogger(__name__)


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


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, fsync and rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(fd, 'w', encoding='utf-8', newline='') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def publish_file(src: str, dst: str) -> None:
    """Atomically make ``dst`` a copy of the finished file ``src`` (a hard link when possible).

    Used to store one checkpoint under several names (``ckpt_epoch_N.pth``, ``best.pth``, ``last.pth``)
    while writing it once. ``dst`` is replaced in one rename, so a reader sees the old file or the new
    one, never a partial one; later replacing ``src`` does not change ``dst``.
    """
    folder = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(folder, f'.{os.path.basename(dst)}.{os.getpid()}.tmp')
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links: copy and fsync instead
        shutil.copyfile(src, tmp)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    _fsync_dir(folder)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """``TRAIN.DETERMINISTIC``: deterministic kernels, no cuDNN autotuning; else cuDNN benchmark (the original)."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True, warn_only=True)


def git_commit(repo_dir: Optional[str] = None) -> str:
    """The checkout's commit (with ``-dirty`` when files differ), or ``unknown``."""
    repo_dir = repo_dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'], cwd=repo_dir,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return out.stdout.strip() or 'unknown'


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - a broken optional install must not stop the summary
        return 'not installed'
    return str(getattr(mod, '__version__', 'unknown'))


def environment_summary(device: torch.device, world_size: int) -> Dict[str, Any]:
    """Versions, devices and commit, logged at start and stored as ``OUTPUT/environment.json``."""
    summary: Dict[str, Any] = {
        'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
        'python': platform.python_version(), 'platform': platform.platform(),
        'torch': torch.__version__, 'torchvision': _version('torchvision'), 'timm': _version('timm'),
        'decord': _version('decord'), 'av': _version('av'), 'numpy': np.__version__,
        'git_commit': git_commit(), 'world_size': world_size, 'device': str(device),
        'cpu_threads': torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        summary.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                       gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    return summary


def memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, the process's peak RSS on CPU."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2 ** 20 if sys.platform == 'darwin' else rss / 2 ** 10
    except ImportError:
        return 0.0


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
