"""How many threads a CPU run's main process computes with, and how idle threads wait.

PyTorch's default is one OpenMP thread per core of the machine, each spinning while it waits for work. On a
machine whose cores are shared (other jobs, the run's own loader workers, a container's CPU quota) the
spinning threads compete with the work they wait for and a step can take ten times longer. So a CPU run:

* counts the CPUs this process may use: its affinity mask (``taskset``, cpusets) and the cgroup CPU quota
  (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of v1: a container limited to
  2 CPUs on a 64-core host sees 64 cores in its affinity mask);
* divides them between the training processes of the node and leaves one core to each loader worker;
* lets idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``), which has to be in the environment before
  torch starts its thread pool, i.e. before ``import torch`` (``set_passive_wait_policy`` at the top of
  ``main.py``).

What the user sets wins: ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` in the environment, or the ``CPU_THREADS``
config key. This module is a leaf: it does not import torch (the caller applies the count).
"""
from __future__ import annotations

import math
import os
from typing import Mapping, MutableMapping, Optional, Tuple

CGROUP_ROOT = '/sys/fs/cgroup'


def set_passive_wait_policy(environ: MutableMapping[str, str] = os.environ) -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy; True when it was set here. Call before
    torch is imported: OpenMP reads the variable once, when its thread pool starts."""
    if environ.get('OMP_WAIT_POLICY'):
        return False
    environ['OMP_WAIT_POLICY'] = 'PASSIVE'
    return True


def _read(path: str) -> Optional[str]:
    try:
        with open(path, 'r') as f:
            return f.read().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: str = CGROUP_ROOT) -> Optional[float]:
    """The CPUs the cgroup quota grants (e.g. 1.5), None without a quota or without cgroup files.

    cgroup v2: ``<root>/cpu.max`` holds ``QUOTA PERIOD`` or ``max PERIOD``; v1: ``<root>/cpu/cpu.cfs_quota_us``
    (-1: none) and ``cpu.cfs_period_us`` (also found as ``cpu,cpuacct``)."""
    v2 = _read(os.path.join(root, 'cpu.max'))
    if v2:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != 'max':
            try:
                quota, period = float(parts[0]), float(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    for folder in ('cpu', 'cpu,cpuacct'):
        quota, period = (_read(os.path.join(root, folder, name)) for name in ('cpu.cfs_quota_us', 'cpu.cfs_period_us'))
        if quota is None or period is None:
            continue
        try:
            q, p = float(quota), float(period)
        except ValueError:
            return None
        return q / p if q > 0 and p > 0 else None
    return None


def affinity_cpus() -> int:
    """CPU cores in this process's affinity mask (all cores where the platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_cpus(affinity: Optional[int] = None, quota: Optional[float] = None,
                   cgroup_root: str = CGROUP_ROOT) -> Tuple[int, str]:
    """``(cpus, how they were counted)``: the affinity mask, capped by the cgroup quota (rounded up: a quota
    of 1.5 CPUs keeps two threads busy half the time better than one thread all the time)."""
    affinity = affinity_cpus() if affinity is None else affinity
    quota = cgroup_cpu_quota(cgroup_root) if quota is None else quota
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f'cgroup quota {quota:g} CPUs of {affinity} in the affinity mask'
    return max(1, affinity), f'{affinity} CPUs in the affinity mask' + (f', cgroup quota {quota:g}' if quota else '')


def choose_threads(cpus: int, workers: int, local_processes: int = 1) -> int:
    """Threads for each training process: its share of ``cpus`` less one core per loader worker, at least 1."""
    share = max(1, cpus // max(1, local_processes))
    return max(1, share - max(0, workers))


def cpu_thread_plan(configured: int, workers: int, local_processes: int,
                    environ: Mapping[str, str] = os.environ, affinity: Optional[int] = None,
                    quota: Optional[float] = None, cgroup_root: str = CGROUP_ROOT) -> Tuple[Optional[int], str]:
    """``(threads to set or None to keep torch's, the line to log)``.

    ``configured`` (the ``CPU_THREADS`` key) above 0 wins; then ``OMP_NUM_THREADS`` from the environment (torch
    has already applied it: kept); else :func:`choose_threads` over :func:`available_cpus`."""
    policy = environ.get('OMP_WAIT_POLICY', 'the OpenMP default')
    if configured > 0:
        return configured, f'CPU threads: {configured} (CPU_THREADS), OMP_WAIT_POLICY {policy}'
    given = environ.get('OMP_NUM_THREADS', '').strip()
    if given:
        return None, f'CPU threads: {given} (OMP_NUM_THREADS), OMP_WAIT_POLICY {policy}'
    cpus, counted = available_cpus(affinity, quota, cgroup_root)
    threads = choose_threads(cpus, workers, local_processes)
    return threads, (f'CPU threads: {threads} ({counted}; {cpus} for {local_processes} process(es) less '
                     f'{workers} loader worker(s) each), OMP_WAIT_POLICY {policy}; set CPU_THREADS or '
                     f'OMP_NUM_THREADS to choose')
