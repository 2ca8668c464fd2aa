"""Signals: Ctrl-C (SIGINT) saves like SIGTERM and exits 130, a second one stops at once without a traceback;
signals to the whole process group (as a terminal, systemd and SLURM send them) reach DataLoader workers that
ignore them, so the trainer saves; workers (DataLoader and datasets.resize pools) end when their parent is
killed with SIGKILL."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data import DataLoader

from datasets.loader import init_worker
from engine.preemption import PreemptionFlag
from engine_helpers import REPO, TOY_CFG, env, main_cmd, make_tiny_data, run_folder, run_main, tiny_opts


def _alive(pid):
    """True while ``pid`` runs (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def _wait_gone(pids, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _children(pid):
    """Pids whose parent is ``pid`` and whose command line is the parent's (forked workers)."""
    found = []
    cmdline = open(f'/proc/{pid}/cmdline', 'rb').read()
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            stat = open(f'/proc/{name}/stat').read()
            if int(stat.rsplit(')', 1)[1].split()[1]) == pid and open(f'/proc/{name}/cmdline', 'rb').read() == cmdline:
                found.append(int(name))
        except (OSError, IndexError, ValueError):
            pass
    return found


# ----------------------------------------------------------------------------------------------- unit level
def test_a_second_sigint_raises_keyboard_interrupt_at_once():
    flag = PreemptionFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested and flag.signal_name == 'SIGINT'   # the first one only asks for a save
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)                                        # the handler runs at the next bytecode
        os.kill(os.getpid(), signal.SIGTERM)                     # a SIGTERM after it is ignored, as before
        assert flag.signal_name == 'SIGINT'
    finally:
        flag.uninstall()


def test_ctrl_c_as_the_temp_file_is_created_leaves_no_temp_file(tmp_path, monkeypatch):
    """A second Ctrl-C during a save can be handled the moment os.open returns: the temporary exists on disk
    but its descriptor was never handed to the writer. The temporary must still go, the target stay as it was."""
    from utils import fs
    target = tmp_path / 'last.pth'
    target.write_bytes(b'good')
    real_open = os.open

    def open_then_interrupted(path, flags, mode=0o777):
        os.close(real_open(path, flags, mode))
        raise KeyboardInterrupt

    monkeypatch.setattr(fs.os, 'open', open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        fs.atomic_write(str(target), lambda f: f.write(b'new'))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ['last.pth'] and target.read_bytes() == b'good'


class _Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor(i * i)


def test_loader_workers_ignore_stop_signals():
    loader = DataLoader(_Squares(), batch_size=2, num_workers=2, worker_init_fn=init_worker,
                        persistent_workers=True)
    batches = iter(loader)
    assert [next(batches).tolist() for _ in range(4)][1] == [4, 9]  # both workers started and delivered
    pids = [w.pid for w in batches._workers]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        for pid in pids:
            os.kill(pid, sig)
    time.sleep(0.5)
    assert all(_alive(p) for p in pids)
    assert [b.tolist() for b in batches][-1] == [62 ** 2, 63 ** 2]   # the epoch goes on to its end
    del batches


LOADER_SCRIPT = """
import sys, time, torch
from torch.utils.data import DataLoader
from datasets.loader import init_worker
class Slow(torch.utils.data.Dataset):
    def __len__(self): return 10 ** 6
    def __getitem__(self, i): time.sleep(0.05); return i
batches = iter(DataLoader(Slow(), batch_size=1, num_workers=2, worker_init_fn=init_worker))
next(batches)
print(' '.join(str(w.pid) for w in batches._workers), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_loader_workers_end_with_a_killed_parent():
    proc = subprocess.Popen([sys.executable, '-c', LOADER_SCRIPT], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.kill()
        proc.wait(10)
        assert _wait_gone(pids, 2.0) == []       # not after torch's 5 s status check, and not later
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


SLOW_RESIZE = """
import sys, time
from datasets import resize
original = resize._frame_timestamps
def slow(frames, step):   # about 1 s per video, so that the workers are busy when the parent is killed
    for frame in original(frames, step):
        time.sleep(0.04)
        yield frame
resize._frame_timestamps = slow
sys.exit(resize.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_resize_pool_workers_end_with_a_killed_parent(tmp_path):
    from datasets.decoders import write_video
    from video_helpers import stamped_frames
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    src.mkdir()
    for i in range(6):
        write_video(str(src / f'v{i}.mp4'), stamped_frames(25, 24, 32, seed=i), fps=25)
    proc = subprocess.Popen([sys.executable, '-c', SLOW_RESIZE, str(src), str(dst), '--workers', '2',
                             '--no-progress'], cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        workers = []
        while len(workers) < 2 and proc.poll() is None and time.time() < deadline:
            workers = _children(proc.pid)
            time.sleep(0.05)
        while not any(p.name.endswith('.tmp') for p in dst.glob('.*')) and time.time() < deadline:
            time.sleep(0.02)
        assert len(workers) == 2 and proc.poll() is None
        proc.kill()
        proc.wait(10)
        assert _wait_gone(workers, 3.0) == []    # before: they finished the queue, then slept forever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp('signals')
    return {'data': make_tiny_data(str(root / 'data'), num_train=16, num_val=2), 'out': str(root / 'out')}


def _args(work, tag):
    return ['--cfg', TOY_CFG, '--output', work['out'], '--tag', tag, '--opts',
            *tiny_opts(work['data'], DATA__NUM_WORKERS=2, TRAIN__EPOCHS=1)]


def _signal_group(args, log_file, marker, signals, gap=0.0, timeout=240):
    """Start main.py in its own process group; once ``marker`` is in ``log_file``, send each of ``signals`` to
    the whole group (as a terminal does for Ctrl-C), ``gap`` seconds apart. Returns (returncode, output)."""
    proc = subprocess.Popen(main_cmd(args), cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if os.path.exists(log_file) and marker in open(log_file).read():
                break
            time.sleep(0.02)
        assert proc.poll() is None, f'{marker!r} never appeared:\n{proc.communicate()[0][-3000:]}'
        for sig in signals:
            os.killpg(proc.pid, sig)
            time.sleep(gap)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out


@pytest.mark.slow
@pytest.mark.parametrize('sig, code', [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_process_group_signal_mid_epoch_saves_and_the_rerun_resumes(work, sig, code):
    name = signal.Signals(sig).name
    args = _args(work, name.lower())
    folder = run_folder(work['out'], name.lower())
    rc, out = _signal_group(args, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/1][1/4]', [sig])
    assert rc == code, out[-3000:]
    assert 'Traceback' not in out and 'DataLoader worker' not in out, out[-3000:]
    assert f'{name} received: saving last.pth' in out
    saved = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert saved['epoch'] == -1 and 1 <= saved['epoch_step'] < 4     # mid-epoch, at a step boundary
    assert not os.path.exists(os.path.join(folder, 'run.lock'))       # released on the way out
    proc = run_main(args)
    assert f"resumed: epoch 0, step {saved['epoch_step']} of 4" in proc.stdout
    assert torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['epoch'] == 0


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_without_a_traceback(work):
    folder = run_folder(work['out'], 'twice')
    rc, out = _signal_group(_args(work, 'twice'), os.path.join(folder, 'log_rank0.txt'), 'Train: [0/1][1/4]',
                            [signal.SIGINT, signal.SIGINT], gap=0.05)
    assert rc == 130, out[-3000:]
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out[-3000:]
    assert 'main.py: interrupted (Ctrl-C)' in out or 'interrupted: state saved in last.pth' in out
    assert not os.path.exists(os.path.join(folder, 'run.lock'))


def test_ctrl_c_outside_training_exits_130_in_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the model is built, during --eval or the final test: KeyboardInterrupt, not a traceback."""
    import main

    def interrupted(config, dist_info, *rest):
        raise KeyboardInterrupt

    monkeypatch.setattr(main, 'run', interrupted)
    data = make_tiny_data(str(tmp_path / 'data'), num_train=4, num_val=1)
    code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'ctrl_c', '--opts',
                      *tiny_opts(data)])
    assert code == 130
    assert capsys.readouterr().err == 'main.py: interrupted (Ctrl-C)\n'
    assert not os.path.exists(run_folder(str(tmp_path / 'out'), 'ctrl_c'))  # lock released, nothing left
