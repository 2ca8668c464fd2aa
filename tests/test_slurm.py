"""SLURM without SLURM: the variables srun sets form one run (2 gloo ranks), MASTER_ADDR / MASTER_PORT come
from the node list and the job id, SIGUSR1 saves and requeues through a stub ``scontrol`` that records its call,
the requeued instance resumes; the output folder's run.lock refuses a second run and is taken over when stale."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from engine_helpers import REPO, TOY_CFG, env, free_port, make_tiny_data, run_folder, tiny_opts
from utils.distributed import LaunchError, SLURM_PORT_BASE, SLURM_PORT_SPAN, first_slurm_host, slurm_launch_env, \
    slurm_port
from utils.run_lock import LOCK_NAME, RunLock, RunLockedError

FAKE_SCONTROL = """#!/usr/bin/env bash
# records every call; "show hostnames LIST" answers with 127.0.0.1 first (the tests run on one machine)
echo "$*" >> "$SCONTROL_CALLS"
if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; echo node2; fi
exit 0
"""


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'scontrol').write_text(FAKE_SCONTROL)
    (bin_dir / 'scontrol').chmod(0o755)
    calls = tmp_path / 'scontrol_calls.txt'
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv('SCONTROL_CALLS', str(calls))
    return calls


# what srun gives the second of 2 tasks (seen with slurm 22.05); the batch script's shell lacks the SLURM_STEP_*
SRUN_TASK = {'SLURM_PROCID': '1', 'SLURM_NTASKS': '2', 'SLURM_LOCALID': '1', 'SLURM_JOB_ID': '4242',
             'SLURM_JOB_NODELIST': 'gpu[07-08]', 'SLURM_STEP_ID': '0', 'SLURM_STEP_NUM_TASKS': '2'}
BATCH_SHELL = {'SLURM_PROCID': '0', 'SLURM_NTASKS': '2', 'SLURM_LOCALID': '0', 'SLURM_JOB_ID': '4242',
               'SLURM_JOB_NODELIST': 'gpu[07-08]'}


# ----------------------------------------------------------------------------------------------- environment
def test_srun_variables_give_rank_world_size_and_rendezvous(fake_scontrol):
    launch = slurm_launch_env(SRUN_TASK)
    assert launch == {'RANK': '1', 'WORLD_SIZE': '2', 'LOCAL_RANK': '1', 'MASTER_ADDR': '127.0.0.1',
                      'MASTER_PORT': str(slurm_port('4242'))}
    assert fake_scontrol.read_text() == 'show hostnames gpu[07-08]\n'
    assert slurm_port('4242') != slurm_port('4243')
    # given values win; torchrun's variables win over SLURM's (torchrun inside an allocation)
    assert slurm_launch_env(dict(SRUN_TASK, MASTER_ADDR='head', MASTER_PORT='1234')) == {
        'RANK': '1', 'WORLD_SIZE': '2', 'LOCAL_RANK': '1'}
    assert slurm_launch_env(dict(SRUN_TASK, RANK='0', WORLD_SIZE='8')) == {}
    # one task, no srun, python in the batch script itself, or an srun step of 1 task in a 2-task job: one process
    assert slurm_launch_env(dict(SRUN_TASK, SLURM_NTASKS='1', SLURM_STEP_NUM_TASKS='1', SLURM_PROCID='0')) == {}
    assert slurm_launch_env({'SLURM_JOB_ID': '4242'}) == {}
    assert slurm_launch_env(BATCH_SHELL) == {}
    assert slurm_launch_env(dict(SRUN_TASK, SLURM_PROCID='0', SLURM_STEP_NUM_TASKS='1')) == {}


def test_master_port_stays_below_the_ephemeral_range_for_every_job_id():
    """Linux hands out 32768 and up to outgoing connections: a rendezvous port there can be taken at random."""
    ports = {slurm_port(str(job_id)) for job_id in range(200000)}
    assert max(ports) < 32768 and min(ports) >= 1024 and len(ports) > 15000


@pytest.mark.parametrize('tasks, node, local', [
    ({'SLURM_STEP_TASKS_PER_NODE': '4(x2)'}, '1', '4'), ({'SLURM_STEP_TASKS_PER_NODE': '2,1'}, '1', '1'),
    ({'SLURM_STEP_TASKS_PER_NODE': '3(x2),1'}, '0', '3'), ({'SLURM_NTASKS_PER_NODE': '8'}, '0', '8'),
    ({'SLURM_STEP_TASKS_PER_NODE': '2', 'SLURM_NTASKS_PER_NODE': '8'}, '0', '2')])
def test_srun_tasks_learn_how_many_processes_share_their_node(fake_scontrol, tasks, node, local):
    """LOCAL_WORLD_SIZE, as torchrun sets it: the loader's worker advice divides the node's cores by it."""
    assert slurm_launch_env(dict(SRUN_TASK, SLURM_NODEID=node, **tasks))['LOCAL_WORLD_SIZE'] == local
    assert slurm_launch_env(dict(SRUN_TASK, LOCAL_WORLD_SIZE='5', **tasks)).get('LOCAL_WORLD_SIZE') is None


def test_first_host_without_scontrol(monkeypatch, tmp_path):
    monkeypatch.setenv('PATH', str(tmp_path))  # no scontrol anywhere
    assert first_slurm_host('gpu[003-005,007],cpu1') == 'gpu003'
    assert first_slurm_host('node7') == 'node7'
    assert first_slurm_host('a-b[1-2]') == 'a-b1'


@pytest.mark.parametrize('bad, words', [
    ({'SLURM_JOB_NODELIST': ''}, ['MASTER_ADDR', 'SLURM_JOB_NODELIST']),
    ({'SLURM_JOB_ID': ''}, ['MASTER_PORT', 'SLURM_JOB_ID']),
    ({'SLURM_PROCID': 'x'}, ['SLURM_PROCID', "'x'"]),
    ({'SLURM_PROCID': '5'}, ['SLURM_PROCID=5', '0..1']),
])
def test_launch_errors_are_one_line(fake_scontrol, bad, words):
    with pytest.raises(LaunchError) as info:
        slurm_launch_env(dict(SRUN_TASK, **bad))
    assert '\n' not in str(info.value) and all(w in str(info.value) for w in words)


def test_main_without_a_rendezvous_address_fails_in_one_line(tmp_path):
    run_env = dict(env(), SLURM_PROCID='0', SLURM_NTASKS='2', SLURM_LOCALID='0', SLURM_JOB_ID='7', SLURM_STEP_ID='0')
    run_env.pop('SLURM_JOB_NODELIST', None)
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', TOY_CFG, '--output', str(tmp_path)], cwd=REPO,
                          env=run_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count('\n') == 0 and 'MASTER_ADDR' in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------------------------- run lock
def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def _write_lock(folder, **info):
    os.makedirs(folder, exist_ok=True)
    record = dict(dict(host=socket.gethostname(), pid=os.getpid(), started='2026-01-01 00:00:00 +0000'), **info)
    with open(os.path.join(folder, LOCK_NAME), 'w') as f:
        json.dump(record, f)
    return record


def test_a_lock_in_a_new_folder_that_stays_empty_leaves_no_folder(tmp_path):
    RunLock(str(tmp_path / 'new')).acquire().release()
    assert not (tmp_path / 'new').exists()
    lock = RunLock(str(tmp_path / 'used')).acquire()
    (tmp_path / 'used' / 'log_rank0.txt').write_text('x')
    lock.release()
    assert os.listdir(tmp_path / 'used') == ['log_rank0.txt']


def test_lock_refuses_a_second_run_and_releases(tmp_path):
    first = RunLock(str(tmp_path)).acquire()
    info = json.load(open(tmp_path / LOCK_NAME))
    assert info['pid'] == os.getpid() and info['host'] == socket.gethostname() and info['started']
    with pytest.raises(RunLockedError) as refused:
        RunLock(str(tmp_path)).acquire()
    message = str(refused.value)
    assert '\n' not in message and str(tmp_path / LOCK_NAME) in message and f'PID {os.getpid()}' in message
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock(str(tmp_path)).acquire().release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    _write_lock(str(tmp_path), pid=_dead_pid())
    lock = RunLock(str(tmp_path)).acquire()
    assert json.load(open(tmp_path / LOCK_NAME))['pid'] == os.getpid()
    assert 'taking over the lock' in capsys.readouterr().err
    lock.release()


def test_lock_of_another_host_is_refused_and_a_requeued_job_takes_over_its_own(tmp_path, monkeypatch):
    _write_lock(str(tmp_path), host='elsewhere', pid=1, slurm_job_id='99', slurm_restart_count='0')
    with pytest.raises(RunLockedError, match='host elsewhere'):
        RunLock(str(tmp_path)).acquire()
    monkeypatch.setenv('SLURM_JOB_ID', '99')
    monkeypatch.setenv('SLURM_RESTART_COUNT', '1')   # the same job, started again by SLURM after a requeue
    RunLock(str(tmp_path)).acquire().release()


def test_own_pid_in_a_lock_of_an_earlier_process_is_taken_over(tmp_path, capsys):
    """A restarted container: the trainer is PID 1 again, the lock of its previous life names PID 1 too; the
    start time tells them apart. The same PID with the same start time (this very process) is refused."""
    mine = RunLock(str(tmp_path)).info
    assert mine['pid_start']
    _write_lock(str(tmp_path), pid=os.getpid(), pid_start=str(int(mine['pid_start']) + 1))
    lock = RunLock(str(tmp_path)).acquire()
    assert 'a restarted container' in capsys.readouterr().err
    with pytest.raises(RunLockedError, match=f'PID {os.getpid()}'):
        RunLock(str(tmp_path)).acquire()
    lock.release()


@pytest.mark.parametrize('make, words', [
    (lambda path: path.mkdir(), 'a directory'),
    (lambda path: path.write_text(''), 'empty'),
    (lambda path: path.write_bytes(b'\x00\x17garbage{'), 'not a lock file'),
    (lambda path: path.write_text('{"note": 1}'), 'no holder'),
])
def test_a_run_lock_that_no_run_wrote_says_what_it_is(tmp_path, make, words):
    make(tmp_path / LOCK_NAME)
    with pytest.raises(RunLockedError) as refused:
        RunLock(str(tmp_path)).acquire()
    message = str(refused.value)
    assert words in message and 'another run (host ?' not in message and '\n' not in message
    assert str(tmp_path / LOCK_NAME) in message and os.listdir(tmp_path) == [LOCK_NAME]


def test_a_retransmitted_link_on_nfs_is_our_own_lock(tmp_path, monkeypatch):
    """NFS: the first link() call made the lock but its reply was lost; the retransmission answers EEXIST."""
    real_link = os.link

    def link_then_eexist(src, dst):
        real_link(src, dst)
        raise FileExistsError(17, 'File exists', dst)
    monkeypatch.setattr(os, 'link', link_then_eexist)
    lock = RunLock(str(tmp_path)).acquire()
    monkeypatch.setattr(os, 'link', real_link)
    assert lock.held and json.load(open(tmp_path / LOCK_NAME))['pid'] == os.getpid()
    assert os.listdir(tmp_path) == [LOCK_NAME]
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_requeue_without_scontrol_warns_in_one_line_and_exits_0(tmp_path, monkeypatch, caplog):
    from engine.preemption import finish_preempted
    monkeypatch.setenv('PATH', str(tmp_path))  # a container without SLURM's client tools
    monkeypatch.setenv('SLURM_JOB_ID', '4242')
    with caplog.at_level('INFO', logger='engine.preemption'):
        assert finish_preempted('SIGUSR1', is_main=True) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert len(warnings) == 1 and 'will not be requeued' in warnings[0] and 'scontrol' in warnings[0]
    assert '\n' not in warnings[0]


def test_release_leaves_a_lock_that_another_run_took_over(tmp_path):
    lock = RunLock(str(tmp_path)).acquire()
    other = _write_lock(str(tmp_path), pid=12345, host='elsewhere')
    lock.release()
    assert json.load(open(tmp_path / LOCK_NAME)) == other


def test_main_into_a_locked_folder_is_refused_in_one_line(tmp_path):
    data = make_tiny_data(str(tmp_path / 'data'), num_train=4, num_val=1)
    folder = run_folder(str(tmp_path / 'out'), 'locked')
    held = _write_lock(folder)   # held by this (live) test process
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', TOY_CFG, '--output', str(tmp_path / 'out'),
                           '--tag', 'locked', '--opts', *tiny_opts(data)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.count('\n') == 1 and os.path.join(folder, LOCK_NAME) in proc.stderr, proc.stderr
    assert sorted(os.listdir(folder)) == [LOCK_NAME]             # nothing written into the other run's folder
    assert json.load(open(os.path.join(folder, LOCK_NAME))) == held


def test_throughput_is_not_refused_by_a_lock(tmp_path):
    """--throughput writes nothing into the output folder, so a training run holding it does not stop it."""
    import main
    data = make_tiny_data(str(tmp_path / 'data'), num_train=2, num_val=1)
    folder = run_folder(str(tmp_path / 'out'), 'locked')
    held = _write_lock(folder)   # held by this (live) test process
    assert main.main(['--cfg', TOY_CFG, '--throughput', '--output', str(tmp_path / 'out'), '--tag', 'locked',
                      '--opts', *tiny_opts(data)]) == 0
    assert sorted(os.listdir(folder)) == [LOCK_NAME] and json.load(open(os.path.join(folder, LOCK_NAME))) == held


# ----------------------------------------------------------------------------------------------- srun-style run
def _srun(args, job_id, calls, bin_dir, restart=0):
    """Two main.py processes with only the variables srun gives its tasks (no torchrun, no MASTER_*)."""
    procs = []
    for rank in range(2):
        task_env = dict(env(), SLURM_PROCID=str(rank), SLURM_NTASKS='2', SLURM_LOCALID=str(rank), SLURM_STEP_ID='0',
                        SLURM_STEP_NUM_TASKS='2',
                        SLURM_JOB_ID=str(job_id), SLURM_JOB_NODELIST='localhost', SLURM_RESTART_COUNT=str(restart),
                        SCONTROL_CALLS=str(calls), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        procs.append(subprocess.Popen([sys.executable, 'main.py'] + args, cwd=REPO, env=task_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(procs, timeout=300):
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [p.returncode for p in procs], outs


def _job_id():
    """A job id whose derived MASTER_PORT is free now (the kernel hands out ephemeral ports, above the range
    job ids map to, so candidates in the range are tried)."""
    import random
    for port in random.sample(range(SLURM_PORT_BASE, SLURM_PORT_BASE + SLURM_PORT_SPAN), 200):
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:
                continue
        return port - SLURM_PORT_BASE + 5 * SLURM_PORT_SPAN
    raise RuntimeError('no free port in the MASTER_PORT range')


@pytest.mark.slow
def test_srun_tasks_form_one_run_that_saves_requeues_and_resumes_on_sigusr1(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'scontrol').write_text(FAKE_SCONTROL)
    (bin_dir / 'scontrol').chmod(0o755)
    calls = tmp_path / 'scontrol_calls.txt'
    data = make_tiny_data(str(tmp_path / 'data'), num_train=16, num_val=2)
    args = ['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'srun', '--opts',
            *tiny_opts(data, DATA__BATCH_SIZE=2, TRAIN__EPOCHS=1)]
    folder = run_folder(str(tmp_path / 'out'), 'srun')
    job_id = _job_id()
    procs = _srun(args, job_id, calls, bin_dir)
    log = os.path.join(folder, 'log_rank0.txt')
    deadline = time.time() + 240
    while not (os.path.exists(log) and 'Train: [0/1][1/4]' in open(log).read()):
        assert time.time() < deadline and all(p.poll() is None for p in procs), _finish(procs, 5)[1][0][-3000:]
        time.sleep(0.02)
    for proc in procs:                       # SLURM's --signal=USR1@120 signals every task
        proc.send_signal(signal.SIGUSR1)
    codes, outs = _finish(procs)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert 'x 2 process(es)' in outs[0] and os.path.exists(os.path.join(folder, 'log_rank1.txt'))  # one run, 2 ranks
    assert 'SIGUSR1 received: saving last.pth' in outs[0]
    saved = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert saved['epoch'] == -1 and 1 <= saved['epoch_step'] < 4
    requeues = [line for line in calls.read_text().splitlines() if line.startswith('requeue')]
    assert requeues == [f'requeue {job_id}'], calls.read_text()   # rank 0 only, once
    assert f'requeued SLURM job {job_id}' in outs[0]
    assert 'show hostnames localhost' in calls.read_text()        # MASTER_ADDR from the node list
    assert not os.path.exists(os.path.join(folder, LOCK_NAME))

    # SLURM starts the job again: same id, restart count 1, the same command
    codes, outs = _finish(_srun(args, job_id, calls, bin_dir, restart=1))
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert f"resumed: epoch 0, step {saved['epoch_step']} of 4" in outs[0]
    assert torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['epoch'] == 0
    assert len([line for line in calls.read_text().splitlines() if line.startswith('requeue')]) == 1


@pytest.mark.parametrize('script, args, cpus, workers', [
    ('train.sbatch', ['cfg.yaml', '--opts', 'TRAIN.EPOCHS', '1'], '8', '7'),
    ('eval.sbatch', ['cfg.yaml', 'ckpt.pth'], '10', '9'),
    ('train.sbatch', ['cfg.yaml'], '1', '1'),
    ('train.sbatch', ['cfg.yaml'], '', None),
])
def test_sbatch_scripts_leave_one_cpu_of_the_task_to_the_training_loop(tmp_path, script, args, cpus, workers):
    """DATA.NUM_WORKERS = cpus-per-task - 1, given before the caller's arguments (an explicit value there wins)."""
    (tmp_path / 'srun').write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$LAUNCHED"\n')
    (tmp_path / 'srun').chmod(0o755)
    launched = tmp_path / 'launched.txt'
    run_env = dict(env(), PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", LAUNCHED=str(launched),
                   SLURM_SUBMIT_DIR=REPO, SLURM_JOB_ID='77', PYTHON='python', SLURM_CPUS_PER_TASK=cpus)
    proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'slurm', script), *args], cwd=str(tmp_path),
                          env=run_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = launched.read_text().split('\n')[:-1]
    positional = 2 if script == 'eval.sbatch' else 1   # CONFIG [CHECKPOINT], then main.py's arguments
    if workers is None:
        assert 'DATA.NUM_WORKERS' not in argv
    else:
        at = argv.index('DATA.NUM_WORKERS')
        assert argv[at - 1] == '--opts' and argv[at + 1] == workers and at > argv.index(args[positional - 1])
        assert argv[at + 2:] == args[positional:]
