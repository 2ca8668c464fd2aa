"""The thread policy of CPU runs (utils/threads.py): CPUs counted from the affinity mask and the cgroup quota
(simulated cgroup files), the loader workers' share left to them, idle threads that sleep, the user's choice
first; and main.py applying it before torch starts its pool."""
import ast
import logging
import os

import pytest
import torch

from engine_helpers import REPO, TOY_CFG
from utils.threads import (available_cpus, cgroup_cpu_quota, choose_threads, cpu_thread_plan,
                           set_passive_wait_policy)


def _cgroup(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize('files,quota', [
    ({'cpu.max': 'max 100000\n'}, None),                                    # v2, no limit
    ({'cpu.max': '150000 100000\n'}, 1.5),                                  # v2, 1.5 CPUs
    ({'cpu/cpu.cfs_quota_us': '-1\n', 'cpu/cpu.cfs_period_us': '100000\n'}, None),  # v1, no limit
    ({'cpu,cpuacct/cpu.cfs_quota_us': '200000\n', 'cpu,cpuacct/cpu.cfs_period_us': '100000\n'}, 2.0),  # v1
    ({'cpu.max': 'garbage\n'}, None),
    ({}, None),                                                             # no cgroup files at all
])
def test_cgroup_quota_from_v1_and_v2_files(tmp_path, files, quota):
    assert cgroup_cpu_quota(_cgroup(tmp_path, files)) == quota


def test_available_cpus_is_the_affinity_capped_by_the_quota(tmp_path):
    root = _cgroup(tmp_path, {'cpu.max': '150000 100000'})
    assert available_cpus(affinity=64, cgroup_root=root)[0] == 2   # a container of 1.5 CPUs on a 64-core host
    assert available_cpus(affinity=1, cgroup_root=root)[0] == 1     # taskset to one core
    assert available_cpus(affinity=8, cgroup_root=str(tmp_path / 'none'))[0] == 8


def test_threads_leave_the_loader_workers_their_cores():
    assert choose_threads(cpus=2, workers=2) == 1          # the toy command on 2 cores
    assert choose_threads(cpus=16, workers=2) == 14
    assert choose_threads(cpus=16, workers=2, local_processes=4) == 2
    assert choose_threads(cpus=4, workers=8, local_processes=2) == 1  # never 0


def test_what_the_user_sets_wins(tmp_path):
    root = str(tmp_path)
    threads, line = cpu_thread_plan(3, workers=2, local_processes=1, environ={'OMP_NUM_THREADS': '5'},
                                    affinity=8, cgroup_root=root)
    assert threads == 3 and 'CPU_THREADS' in line
    threads, line = cpu_thread_plan(0, 2, 1, environ={'OMP_NUM_THREADS': '5'}, affinity=8, cgroup_root=root)
    assert threads is None and 'CPU threads: 5 (OMP_NUM_THREADS)' in line   # torch already applied it
    threads, line = cpu_thread_plan(0, 2, 1, environ={'OMP_WAIT_POLICY': 'PASSIVE'}, affinity=8, cgroup_root=root)
    assert threads == 6 and '\n' not in line and 'PASSIVE' in line and '2 loader worker' in line
    environ = {'OMP_WAIT_POLICY': 'ACTIVE'}
    assert not set_passive_wait_policy(environ) and environ['OMP_WAIT_POLICY'] == 'ACTIVE'
    environ = {}
    assert set_passive_wait_policy(environ) and environ['OMP_WAIT_POLICY'] == 'PASSIVE'


def test_main_sets_the_wait_policy_before_anything_imports_torch():
    """OpenMP reads OMP_WAIT_POLICY once, when torch's pool starts: the call has to precede every import that
    brings torch in (datasets, engine, models, utils.distributed ...)."""
    tree = ast.parse(open(os.path.join(REPO, 'main.py')).read())
    call = next(node.lineno for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, 'id', '') == 'set_passive_wait_policy')
    heavy = [node.lineno for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
             and node.module.split('.')[0] in ('datasets', 'engine', 'models', 'torch')
             or isinstance(node, ast.ImportFrom) and node.module in ('utils.distributed', 'utils.env')]
    assert heavy and call < min(heavy)


def test_a_cpu_run_sets_and_logs_its_threads(monkeypatch, caplog):
    import main
    from engine.config import load_config
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr('utils.threads.affinity_cpus', lambda: 6)
    monkeypatch.setattr('utils.threads.cgroup_cpu_quota', lambda root=None: None)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger='main'):
            main.set_cpu_threads(load_config(TOY_CFG, ['DATA.NUM_WORKERS', '2']))
        assert torch.get_num_threads() == 4
        assert [r.message for r in caplog.records if r.message.startswith('CPU threads: 4 ')]
        main.set_cpu_threads(load_config(TOY_CFG, ['CPU_THREADS', '1']))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
