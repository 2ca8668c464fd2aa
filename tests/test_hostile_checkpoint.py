"""Hostile tests of the checkpoint commit protocol: kill -9 at fixed points inside the checkpoint and metrics
writes (``VFN_TEST_KILL_AT``, ``engine/checkpoint/saving.py``), a damaged ``last.pth`` next to a better
``best.pth``, a fresh start over a finished run, and a full disk. After every kill the same command is run
again and must end with every file of the uninterrupted run: last.pth, ckpt_epoch_N, best.pth, metrics."""
import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

from engine_helpers import REPO, TOY_CFG, env, main_cmd, make_tiny_data, max_abs_diff, model_tensors, run_folder, \
    run_main, tiny_opts

pytestmark = pytest.mark.slow

# metrics that depend on the clock, not on the computation
TIMING_KEYS = ('epoch_time_s', 'data_wait_fraction')


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp('hostile')
    data = make_tiny_data(str(root / 'data'))
    return {'data': data, 'out': str(root / 'out')}


def _args(work, tag, **opts):
    return ['--cfg', TOY_CFG, '--output', work['out'], '--tag', tag, '--opts', *tiny_opts(work['data'], **opts)]


def _metrics(folder):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
            for line in open(os.path.join(folder, 'metrics.jsonl'))]


def _epoch_files(folder):
    """{name: (epoch, weights)} of the checkpoints in ``folder``."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith('.pth'):
            ckpt = torch.load(os.path.join(folder, name), weights_only=True)
            out[name] = (ckpt['epoch'], ckpt['epoch_step'], ckpt['model'])
    return out


@pytest.fixture(scope='module')
def uninterrupted(work):
    run_main(_args(work, 'whole'))
    return run_folder(work['out'], 'whole')


def _assert_same_run(folder, reference):
    ours, theirs = _epoch_files(folder), _epoch_files(reference)
    assert sorted(ours) == sorted(theirs)
    for name, (epoch, step, weights) in theirs.items():
        assert ours[name][:2] == (epoch, step), name
        assert max_abs_diff(ours[name][2], weights) == 0.0, name
    assert _metrics(folder) == _metrics(reference)
    assert not [n for n in os.listdir(folder) if n.endswith('.tmp')]


# (kill point, what the rerun must find): epoch 0 is always best (the first), SAVE_FREQ 1 publishes ckpt_epoch_N
KILL_POINTS = [
    'written:last.pth@1',            # epoch 0's last.pth complete in its temporary file, not renamed
    'committed:last.pth@1',          # epoch 0 committed, nothing published
    'published:ckpt_epoch_0.pth',    # ckpt_epoch_0 published, best.pth not yet
    'published:best.pth@1',          # published, metrics line not yet written
    'written:metrics.jsonl@1',       # metrics.jsonl's new version complete in its temporary file
    'committed:last.pth@2',          # the last epoch committed, its ckpt_epoch_1 / best / metrics line not yet
]


@pytest.mark.parametrize('point', KILL_POINTS)
def test_kill_inside_the_epoch_save_then_rerun_equals_uninterrupted(work, uninterrupted, point):
    args = _args(work, 'kill-' + point.replace(':', '-').replace('@', '-'))
    folder = run_folder(work['out'], args[5])
    proc = subprocess.run(main_cmd(args), cwd=REPO, env=dict(env(), VFN_TEST_KILL_AT=point), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    # right after the kill: what is published is loadable, and no metrics line is torn or ahead of last.pth
    last = torch.load(os.path.join(folder, 'last.pth'), weights_only=True) if \
        os.path.exists(os.path.join(folder, 'last.pth')) else {'epoch': -1}
    if os.path.exists(os.path.join(folder, 'metrics.jsonl')):
        assert max(m['epoch'] for m in _metrics(folder)) <= last['epoch']
    for name in os.listdir(folder):
        if name.endswith('.pth'):
            assert torch.load(os.path.join(folder, name), weights_only=True)['epoch'] <= last['epoch']
    rerun = run_main(args)
    if point.startswith(('committed', 'published')):
        assert 'was interrupted after last.pth was committed' in rerun.stdout + rerun.stderr
    _assert_same_run(folder, uninterrupted)


def test_damaged_last_pth_never_lets_a_worse_model_replace_best(work, uninterrupted):
    """last.pth unreadable and the fallback ckpt_epoch_0 restores a lower max_accuracy than best.pth holds:
    the redone epoch 1 must beat best.pth's own accuracy to replace it."""
    folder = run_folder(work['out'], 'damaged')
    os.makedirs(folder)
    for name in ('ckpt_epoch_0.pth', 'metrics.jsonl'):
        shutil.copy(os.path.join(uninterrupted, name), folder)
    best = torch.load(os.path.join(uninterrupted, 'best.pth'), weights_only=True)
    best['epoch_record'] = dict(best.get('epoch_record') or {}, val_acc1=100.0)   # a best.pth no epoch can beat
    best['max_accuracy'] = 100.0
    torch.save(best, os.path.join(folder, 'best.pth'))
    before = open(os.path.join(folder, 'best.pth'), 'rb').read()
    with open(os.path.join(folder, 'last.pth'), 'wb') as f:
        f.write(open(os.path.join(uninterrupted, 'last.pth'), 'rb').read()[:5000])   # torn
    proc = run_main(_args(work, 'damaged'))
    assert 'falling back to' in proc.stdout + proc.stderr
    assert open(os.path.join(folder, 'best.pth'), 'rb').read() == before
    last = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert last['epoch'] == 1 and last['max_accuracy'] == 100.0 and not last['is_best']
    assert max_abs_diff(last['model'], model_tensors(os.path.join(uninterrupted, 'last.pth'))) == 0.0


def test_fresh_start_over_a_run_with_best_pth_is_refused_unless_asked(work, uninterrupted):
    folder = run_folder(work['out'], 'over')
    os.makedirs(folder)
    shutil.copy(os.path.join(uninterrupted, 'best.pth'), folder)
    with open(os.path.join(folder, 'last.pth'), 'wb') as f:
        f.write(b'not a checkpoint')
    before = open(os.path.join(folder, 'best.pth'), 'rb').read()
    proc = run_main(_args(work, 'over', TRAIN__EPOCHS=1), check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('main.py: error:')]
    assert len(errors) == 1 and 'best.pth' in errors[0] and 'TRAIN.ALLOW_START_OVER' in errors[0]
    assert 'Traceback' not in proc.stderr
    assert open(os.path.join(folder, 'best.pth'), 'rb').read() == before
    run_main(_args(work, 'over', TRAIN__EPOCHS=1, TRAIN__ALLOW_START_OVER=True))
    moved = [n for n in os.listdir(folder) if n.startswith('previous-')]
    assert len(moved) == 1 and sorted(os.listdir(os.path.join(folder, moved[0]))) == ['best.pth', 'last.pth']
    assert open(os.path.join(folder, moved[0], 'best.pth'), 'rb').read() == before
    assert [m['epoch'] for m in _metrics(folder)] == [0]


def test_disk_full_during_a_checkpoint_write(work, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing epoch 1's last.pth: one line naming the folder and the space needed, exit 2, no
    temporary file left, epoch 0's files intact; freeing space and rerunning ends like the uninterrupted run."""
    import main
    folder = run_folder(work['out'], 'full')
    real_save = torch.save
    calls = []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(obj.get('epoch'))
        if obj.get('epoch') == 1:
            f.write(b'PK\x03\x04 partial')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', full_disk)
    code = main.main(_args(work, 'full'))
    monkeypatch.setattr(torch, 'save', real_save)
    assert code == 2
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith('main.py:')]  # the rest: progress bars
    assert len(err) == 1 and err[0].startswith('main.py: error:') and folder in err[0] and 'MB needed' in err[0]
    assert 'Traceback' not in stderr
    assert not [n for n in os.listdir(folder) if n.endswith('.tmp')]
    assert torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['epoch'] == 0
    assert [m['epoch'] for m in _metrics(folder)] == [0]


def test_pretrained_weights_holding_nan_are_refused_before_any_folder(work, tmp_path, capsys):
    """--pretrained with NaN weights: one line naming the file and the tensor, exit 2, no run folder; the
    library entry (load_pretrained) refuses them before the first copy too."""
    import main
    from engine.checkpoint import CheckpointError, load_pretrained
    from models import build_model
    from engine.config import load_config
    model = build_model(load_config(TOY_CFG, tiny_opts(work['data'])))
    state = dict(model.state_dict())  # weights that fit: only their values are wrong
    state['head.bias'] = state['head.bias'].clone()
    state['head.bias'][1] = float('nan')
    nan_file = tmp_path / 'focalnet_tiny_srf.pth'
    torch.save({'model': state}, nan_file)
    out = tmp_path / 'fresh'
    code = main.main(['--cfg', TOY_CFG, '--output', str(out), '--pretrained', str(nan_file),
                      '--opts', *tiny_opts(work['data'])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f'main.py: error: TRAIN.PRETRAINED_PATH {nan_file}') and 'head.bias (1 of' in err[0]
    assert 'NaN or inf' in err[0] and not out.exists()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match='hold NaN or inf'):
        load_pretrained(model, {'model': dict(model.state_dict(), **{'head.bias': torch.full_like(
            model.state_dict()['head.bias'], float('inf'))})})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------ crafted or damaged last.pth: checked before use
def _craft(checkpoint, case):
    """``checkpoint`` (epoch 1, the last of 2) with the one entry ``case`` damages; the field the refusal names."""
    c = dict(checkpoint)
    rng_states = [c['rng']] + [r['rng'] for r in c['rng_per_rank']]
    if case == 'epoch_negative':
        c['epoch'] = -5
    elif case == 'epoch_huge':
        c['epoch'] = 10**12
    elif case in ('step_negative', 'step_huge'):
        c['epoch'], c['epoch_step'] = 0, -5 if case == 'step_negative' else 10**6
        c['epoch_record'] = dict(c['epoch_record'], epoch=0)
    elif case == 'param_groups':
        c['optimizer'] = dict(c['optimizer'], param_groups='x')
    elif case == 'optimizer_shape':
        state = dict(c['optimizer']['state'])
        state[0] = dict(state[0], exp_avg=torch.zeros(3))
        c['optimizer'] = dict(c['optimizer'], state=state)
    elif case == 'scheduler':
        c['lr_scheduler'] = dict(c['lr_scheduler'], num_updates='garbage')
    elif case == 'scaler':
        c['scaler'] = {'scale': 'x', 'growth_factor': 2.0}
    elif case == 'rng_size':
        for r in rng_states:
            r['torch'] = torch.zeros(10, dtype=torch.uint8)
    elif case == 'rng_dtype':
        for r in rng_states:
            r['torch'] = r['torch'].long()
    return c, {'epoch_negative': 'epoch -5', 'epoch_huge': f'epoch {10**12}', 'step_negative': 'epoch_step -5',
               'step_huge': f'epoch_step {10**6}', 'param_groups': 'optimizer: ',
               'optimizer_shape': "optimizer: state 'exp_avg' of parameter 0 has shape [3]",
               'scheduler': "lr_scheduler: num_updates 'garbage'", 'scaler': "scaler: scale 'x'",
               'rng_size': "rng 'torch'", 'rng_dtype': "rng 'torch'"}[case]


CRAFTED = ['epoch_negative', 'epoch_huge', 'step_negative', 'step_huge', 'param_groups', 'optimizer_shape',
           'scheduler', 'scaler', 'rng_size', 'rng_dtype']


@pytest.mark.parametrize('case', CRAFTED)
def test_crafted_last_pth_is_passed_over_or_refused_naming_the_field(work, uninterrupted, tmp_path, capsys, caplog,
                                                                     case):
    """Auto-resume passes over a last.pth whose entries this run cannot resume from (like an unreadable one),
    naming the file and the field; an explicit --resume of it is one line, exit 2, and no run folder."""
    import logging
    import main
    from engine.config import load_config
    from engine.optim import build_optimizer
    from engine.resume import ResumeTarget, find_auto_resume
    from models import build_model
    crafted, field = _craft(torch.load(os.path.join(uninterrupted, 'last.pth'), weights_only=True), case)
    folder = tmp_path / 'run'
    folder.mkdir()
    shutil.copy(os.path.join(uninterrupted, 'ckpt_epoch_0.pth'), folder)
    torch.save(crafted, folder / 'last.pth')
    config = load_config(TOY_CFG, tiny_opts(work['data']))
    target = ResumeTarget(epochs=2, updates_per_epoch=4, world_size=1, batch_size=4, accumulation_steps=1,
                          optimizer=build_optimizer(config, build_model(config)))
    with caplog.at_level(logging.WARNING):
        assert find_auto_resume(str(folder), target=target) == str(folder / 'ckpt_epoch_0.pth')
    skipped = [r.getMessage() for r in caplog.records if 'skipping' in r.getMessage()]
    assert len(skipped) == 1 and str(folder / 'last.pth') in skipped[0] and field in skipped[0], skipped
    out = tmp_path / 'out'
    code = main.main(['--cfg', TOY_CFG, '--output', str(out), '--resume', str(folder / 'last.pth'),
                      '--opts', *tiny_opts(work['data'])])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"main.py: error: --resume {folder / 'last.pth'}") and field in err[0], err
    assert not out.exists()


def test_crafted_last_pth_never_republishes_its_epoch_files(work, uninterrupted, tmp_path, caplog):
    """A finished run whose last.pth was replaced by one with a bad RNG state: the start completes no save from
    it (ckpt_epoch_1.pth and best.pth keep their bytes), passes it over and resumes from ckpt_epoch_1.pth."""
    import main
    folder = run_folder(work['out'], 'crafted')
    shutil.copytree(uninterrupted, folder)
    crafted, _ = _craft(torch.load(os.path.join(uninterrupted, 'last.pth'), weights_only=True), 'rng_size')
    crafted['epoch_record'] = dict(crafted['epoch_record'], val_acc1=100.0)   # it would win best.pth too
    os.remove(os.path.join(folder, 'last.pth'))  # a new file, not the hard link of ckpt_epoch_1 / best
    torch.save(crafted, os.path.join(folder, 'last.pth'))
    before = {n: open(os.path.join(folder, n), 'rb').read() for n in ('ckpt_epoch_1.pth', 'best.pth')}
    assert main.main(_args(work, 'crafted')) == 0
    assert {n: open(os.path.join(folder, n), 'rb').read() for n in before} == before
    assert "last.pth (rng_per_rank[0] rng 'torch'" in caplog.text and 'falling back to' in caplog.text
    assert _metrics(folder) == _metrics(uninterrupted)


# ------------------------------------------------------------------ the metrics of an epoch resumed mid-epoch
def test_metrics_of_epochs_resumed_mid_epoch_equal_the_uninterrupted_run(work, uninterrupted, monkeypatch):
    """SIGTERM in the middle of epoch 0 and at the last update of epoch 1, each time rerun: every metrics line
    (train_loss, lr, unreadable, validation) equals the uninterrupted run's. The epoch's running sums travel in
    last.pth; without them train_loss averaged only the updates after the resume (0.0 after the last one)."""
    import signal
    import main
    from engine.trainer import Trainer
    folder = run_folder(work['out'], 'sums')
    unscale_and_clip = Trainer.unscale_and_clip
    signal_at = {}

    def signalled(self, global_step):  # the flag is read right after this, in the same update
        if global_step == signal_at.get('step'):
            os.kill(os.getpid(), signal.SIGTERM)
        return unscale_and_clip(self, global_step)

    monkeypatch.setattr(Trainer, 'unscale_and_clip', signalled)
    for step, saved in ((1, (-1, 2)), (7, (0, 4)), (None, (1, 0))):  # 4 updates per epoch
        signal_at['step'] = step
        assert main.main(_args(work, 'sums')) == 0
        last = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
        assert (last['epoch'], last['epoch_step']) == saved
    ours, theirs = _metrics(folder), _metrics(uninterrupted)
    assert [m['epoch'] for m in ours] == [0, 1]
    for line, reference in zip(ours, theirs):
        assert line == pytest.approx(reference, rel=1e-6, abs=1e-9)
