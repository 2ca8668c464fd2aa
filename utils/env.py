"""Run environment: seeding, determinism switches, and the versions / devices / commit summary of a run.

The seeding also seeds Python's ``random`` (the original seeded numpy and torch only) and can switch on
deterministic algorithms (``TRAIN.DETERMINISTIC``).
"""
from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from typing import Any, Dict, Optional

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """``TRAIN.DETERMINISTIC``: deterministic kernels, no cuDNN autotuning and full fp32 matmuls; else cuDNN
    benchmark (the original) and TF32 for fp32 matmuls and convolutions on GPUs that have it (Ampere and
    later: about 8x the fp32 matmul rate for a 10-bit mantissa in the products, the PyTorch default for
    convolutions but not for matmuls, where the original's fp32 runs left it off).

    Only the CUDA switches are touched: ``torch.set_float32_matmul_precision('high')`` would also let oneDNN
    use reduced precision on CPUs, which would change CPU results."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
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


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: a cgroup or ``taskset`` limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_process_count() -> int:
    """Training processes on this node: torchrun's LOCAL_WORLD_SIZE, 1 without a launcher."""
    try:
        return max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1')))
    except ValueError:
        return 1


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
