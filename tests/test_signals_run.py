"""Signals for the whole life of a run, and ranks that stop together: a signal during validation saves the end
of the epoch's updates at once, one during the final test stops it (requeued on SIGUSR1) and the same command
then runs only the final test, after which it says "already finished" and touches nothing; a SIGUSR1 that
reaches one rank only is agreed on (one requeue); an evaluation error on one rank stops every rank with the
same exit code; a peer that stops answering ends the run within DIST_TIMEOUT_MIN; Ctrl-C during the imports
is one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine_helpers import REPO, TOY_CFG, env, free_port, main_cmd, make_tiny_data, run_folder, start_ranks, \
    tiny_opts, wait_ranks
from engine.preemption import PreemptedError, PreemptionFlag, process_flag
from test_slurm import FAKE_SCONTROL

# main.py with evaluation batches of 1 s: a signal sent when a phase's first log line appears lands inside it
SLOW_EVALUATION = """
import sys, time
import engine.evaluator as evaluator
score = evaluator._score_batch
def slow(*args, **kwargs):
    time.sleep(1.0)
    return score(*args, **kwargs)
evaluator._score_batch = slow
import main
sys.exit(main.main(sys.argv[1:]))
"""


def _scontrol(tmp_path):
    """A stub scontrol on PATH that records its calls; returns (environment, calls file)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / 'scontrol').write_text(FAKE_SCONTROL)
    (bin_dir / 'scontrol').chmod(0o755)
    calls = tmp_path / 'scontrol_calls.txt'
    return {'PATH': f"{bin_dir}{os.pathsep}{os.environ['PATH']}", 'SCONTROL_CALLS': str(calls),
            'SLURM_JOB_ID': '4711'}, calls


def _requeues(calls):
    return [line for line in calls.read_text().splitlines() if line.startswith('requeue')] if calls.exists() else []


def _signal_when(cmd, extra_env, log_file, marker, sig, timeout=240):
    """Start ``cmd`` in its own process group, send ``sig`` to the group once ``marker`` is in ``log_file``."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(env(), **extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if os.path.exists(log_file) and marker in open(log_file).read():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f'{marker!r} never appeared:\n{proc.communicate()[0][-3000:]}'
        os.killpg(proc.pid, sig)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out


def _snapshot(folder):
    """Every file of ``folder`` with its bytes and modification time."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = (open(path, 'rb').read(), os.stat(path).st_mtime_ns)
    return found


@pytest.mark.slow
def test_signals_in_validation_and_the_final_test_then_only_the_final_test_then_already_finished(
        tmp_path, capsys):
    import main
    data = make_tiny_data(str(tmp_path / 'data'), num_train=16, num_val=2)
    args = ['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'life', '--opts',
            *tiny_opts(data, TRAIN__EPOCHS=1, TRAIN__FINAL_TEST=True, TEST__BATCH_SIZE=1,
                       TEST__FINAL_NUM_CLIP=1, TEST__FINAL_NUM_CROP=1)]
    folder = run_folder(str(tmp_path / 'out'), 'life')
    log = os.path.join(folder, 'log_rank0.txt')
    slurm, calls = _scontrol(tmp_path)
    slow = [sys.executable, '-c', SLOW_EVALUATION] + args

    # SIGTERM during validation: last.pth as of the end of the epoch's updates, saved without finishing validation
    code, out = _signal_when(slow, slurm, log, 'Train: [0/1][4/4]', signal.SIGTERM)
    assert code == 0, out[-3000:]
    assert 'Traceback' not in out and 'SIGTERM received during validation' in out, out[-3000:]
    saved = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert (saved['epoch'], saved['epoch_step']) == (-1, 4)
    assert 'val 0: top-1' not in out and not os.path.exists(os.path.join(folder, 'best.pth'))
    assert 's after SIGTERM; exiting with code 0' in out and _requeues(calls) == []

    # the rerun validates first; SIGUSR1 in the final test: requeued once, exit 0, no results, no lock left
    code, out = _signal_when(slow, slurm, log, 'training time', signal.SIGUSR1)
    assert code == 0, out[-3000:]
    assert 'resumed: epoch 0, step 4 of 4' in out and 'val 0: top-1' in out, out[-3000:]
    assert 'Traceback' not in out and 'final test stopped at batch' in out, out[-3000:]
    assert _requeues(calls) == ['requeue 4711'], calls.read_text()
    assert not os.path.exists(os.path.join(folder, 'run.lock'))
    assert not os.path.exists(os.path.join(folder, 'eval_results.json'))

    # the same command: training is over, only the final test runs and writes its results
    capsys.readouterr()
    assert main.main(args) == 0
    out = capsys.readouterr().out
    assert 'running only the final test' in out and 'training epochs' not in out, out[-3000:]
    results = json.load(open(os.path.join(folder, 'eval_results.json')))
    assert results['views'] == '1x1' and results['train_epochs'] == 1

    # and once more: "already finished", nothing read or rewritten (log, config.yaml, environment.json)
    before = _snapshot(folder)
    started = time.time()
    assert main.main(args) == 0
    out = capsys.readouterr().out
    assert f"already finished: epoch 1/1, test top-1 {results['acc1']:.2f}%" in out, out[-3000:]
    assert time.time() - started < 5 and _snapshot(folder) == before


@pytest.mark.slow
def test_sigusr1_to_one_rank_is_agreed_on_and_requeued_once(tmp_path):
    data = make_tiny_data(str(tmp_path / 'data'), num_train=16, num_val=2)
    args = ['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'usr1', '--opts',
            *tiny_opts(data, DATA__BATCH_SIZE=2, TRAIN__EPOCHS=1)]
    log = os.path.join(run_folder(str(tmp_path / 'out'), 'usr1'), 'log_rank0.txt')
    slurm, calls = _scontrol(tmp_path)
    procs = start_ranks([args, args], extra_env=slurm)
    deadline = time.time() + 240
    while not (os.path.exists(log) and 'Train: [0/1][1/4]' in open(log).read()):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGUSR1)     # SLURM may signal one task only
    (code0, out0), (code1, out1) = wait_ranks(procs)
    assert (code0, code1) == (0, 0), out0[-3000:] + out1[-3000:]
    assert 'SIGUSR1 received: saving last.pth' in out0            # rank 0 learnt which signal it was
    assert _requeues(calls) == ['requeue 4711'], calls.read_text() if calls.exists() else 'no scontrol call'


@pytest.mark.slow
def test_an_evaluation_error_on_one_rank_stops_every_rank_with_its_exit_code(tmp_path):
    data = make_tiny_data(str(tmp_path / 'data'), num_train=16, num_val=2)
    first_val = open(os.path.join(data, 'val.csv')).readline().split(',')[0].split()[0]
    video = first_val if os.path.isabs(first_val) else os.path.join(data, first_val)
    with open(video, 'wb') as f:                       # one rank's shard holds an unreadable video
        f.write(b'not a video')
    args = ['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'bad', '--opts',
            *tiny_opts(data, DATA__BATCH_SIZE=2, TRAIN__EPOCHS=1, TEST__ON_UNREADABLE='error')]
    results = wait_ranks(start_ranks([args, args]), timeout=240)
    codes = [code for code, _ in results]
    assert codes == [4, 4], '\n'.join(out[-2000:] for _, out in results)
    folder = run_folder(str(tmp_path / 'out'), 'bad')
    logs = [open(os.path.join(folder, f'log_rank{r}.txt')).read() for r in range(2)]
    # the rank without the video stops on the other's error, naming it (its console is quiet: rank 0 speaks)
    assert sum('stopping: rank ' in log for log in logs) == 1 and os.path.basename(video) in ''.join(logs)


PEER_TIMEOUT = """
import datetime, sys, time
import torch, torch.distributed as dist
from utils import distributed as du
rank = int(sys.argv[1])
dist.init_process_group('gloo', init_method='tcp://127.0.0.1:' + sys.argv[2], rank=rank, world_size=2,
                        timeout=datetime.timedelta(minutes=30))
du.set_collective_timeout(0.05)      # 3 s after start-up
if rank == 1:                         # a peer that hangs
    time.sleep(60)
start = time.time()
try:
    du.all_reduce_sum(torch.zeros(1))
except RuntimeError as e:
    if du.is_collective_failure(e):     # what main.py turns into one line
        print(f'stopped after {time.time() - start:.1f} s')
"""


@pytest.mark.slow
def test_a_hanging_peer_ends_the_collective_within_the_short_timeout():
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, '-c', PEER_TIMEOUT, str(rank), port], cwd=REPO, env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    try:
        out = procs[0].communicate(timeout=50)[0]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert 'stopped after' in out, out[-2000:]
    assert float(out.split('stopped after ')[1].split()[0]) < 20


def test_ctrl_c_during_the_imports_is_one_line():
    proc = subprocess.Popen(main_cmd(['--cfg', TOY_CFG]), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)                      # python is importing torch (seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err == 'main.py: interrupted (Ctrl-C)\n' and 'Traceback' not in out


def test_sigterm_during_start_up_stops_at_once_and_releases_the_lock(tmp_path, monkeypatch, capsys):
    """Before training or evaluation reads the flag there is nothing to save: the run stops at once (exit 0),
    instead of the default action (killed, run.lock left behind) or waiting for a first step."""
    import main

    def start_up(config, dist_info, *rest):     # the model being built, a checkpoint being loaded ...
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        raise AssertionError('the signal did not stop the start-up')

    def unhandled(signum, frame):
        raise AssertionError('SIGTERM reached no handler of main.py')

    monkeypatch.setattr(main, 'run', start_up)
    data = make_tiny_data(str(tmp_path / 'data'), num_train=4, num_val=1)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        started = time.time()
        code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'term', '--opts',
                          *tiny_opts(data)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0 and time.time() - started < 5
    assert not os.path.exists(run_folder(str(tmp_path / 'out'), 'term'))   # lock released, nothing left


# ----------------------------------------------------------------------------------------------- unit level
def test_the_agreed_signal_decodes_every_combination():
    world = 3
    for got in [('SIGTERM',), ('SIGUSR1',), ('SIGINT', 'SIGTERM'), ('SIGTERM', 'SIGTERM', 'SIGUSR1'), ()]:
        flags = []
        for name in got:
            flag = PreemptionFlag()
            flag.requested, flag.signal_name = True, name
            flags.append(flag)
        total = sum(f.code(world) for f in flags)
        other = PreemptionFlag()                      # a rank that received nothing itself
        assert other.adopt(total, world) == bool(got)
        expected = next((n for n in ('SIGUSR1', 'SIGINT', 'SIGTERM') if n in got), '')
        assert other.signal_name == expected and other.requested == bool(got)


def test_a_signal_stops_an_evaluation_at_the_next_batch():
    from engine.evaluator import evaluate
    flag = process_flag()
    seen = []

    def batches():
        for i in range(6):
            seen.append(i)
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield {'imgs': torch.zeros(1, 1, 2, 3, 4, 4, dtype=torch.uint8), 'index': torch.tensor([i]),
                   'label': torch.tensor([0])}

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
    try:
        with pytest.raises(PreemptedError, match='test stopped at batch 3'):
            evaluate(model, batches(), 3, 1, device=torch.device('cpu'), normalize=lambda x: x.float(),
                     desc='test')
        assert seen == [0, 1, 2] and flag.signal_name == 'SIGTERM'
    finally:
        flag.uninstall()
