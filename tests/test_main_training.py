"""End-to-end training through main.py on a tiny toy set: world-size and accumulation equivalence, exact resume
after SIGKILL and after SIGTERM (mid-epoch), NaN stop, checkpoint layout. Subprocesses with OMP_NUM_THREADS=1."""
import json
import os
import shutil

import pytest
import torch

from engine_helpers import (KILL, TERM, TOY_CFG, make_tiny_data, max_abs_diff, model_tensors, run_and_signal,
                            run_folder, run_main, tiny_opts)

pytestmark = pytest.mark.slow

# Mixup, DropPath, colour jitter and a loader worker: every source of randomness that a resume must restore;
# and an EMA of the weights, which must resume exactly too.
RANDOM_OPTS = dict(AUG__MIXUP=0.8, AUG__CUTMIX=1.0, MODEL__DROP_PATH_RATE=0.2, DATA__NUM_WORKERS=1,
                   TRAIN__EPOCHS=3, TRAIN__EMA=True, TRAIN__EMA_DECAY=0.9)


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp('engine')
    data = make_tiny_data(str(root / 'data'))
    return {'root': str(root), 'data': data, 'out': str(root / 'out')}


def _args(work, tag, *extra, **opts):
    return ['--cfg', TOY_CFG, '--output', work['out'], '--tag', tag, *extra, '--opts', *tiny_opts(work['data'], **opts)]


@pytest.fixture(scope='module')
def baseline(work):
    """One process, batch 4, 2 epochs x 4 updates, mixup off, DropPath 0."""
    run_main(_args(work, 'base'))
    return run_folder(work['out'], 'base')


def test_checkpoint_layout_and_contents(baseline):
    files = set(os.listdir(baseline))
    assert {'ckpt_epoch_0.pth', 'ckpt_epoch_1.pth', 'last.pth', 'config.yaml', 'environment.json',
            'log_rank0.txt', 'metrics.jsonl'} <= files
    last = torch.load(os.path.join(baseline, 'last.pth'), weights_only=True)  # plain data only
    assert last['epoch'] == 1 and last['epoch_step'] == 0 and last['step'] == 8
    for key in ('model', 'optimizer', 'lr_scheduler', 'scaler', 'ema', 'max_accuracy', 'config', 'rng', 'rng_per_rank'):
        assert key in last
    assert isinstance(last['config'], str) and 'video-focalnet_toy' in last['config']
    assert last['lr_scheduler']['num_updates'] == 7
    metrics = [json.loads(line) for line in open(os.path.join(baseline, 'metrics.jsonl'))]
    assert [m['epoch'] for m in metrics] == [0, 1] and last['max_accuracy'] == max(m['val_acc1'] for m in metrics)
    assert all(0.0 <= m['data_wait_fraction'] <= 1.0 for m in metrics)  # the loader's share of step time
    log = open(os.path.join(baseline, 'log_rank0.txt')).read()
    assert 'epoch 1: waiting for data' in log and 'DATA.NUM_WORKERS 0 per process' in log
    assert 'DATA.TRAIN_FILE ' in log and 'sha256' in log  # the lists read, for comparing runs
    if 'best.pth' in files:
        best = torch.load(os.path.join(baseline, 'best.pth'), weights_only=True)
        assert best['max_accuracy'] == max(m['val_acc1'] for m in metrics[:best['epoch'] + 1])


def test_two_processes_match_one_process(work, baseline):
    """torchrun with 2 gloo processes x batch 2 = 1 process x batch 4 (the same global batches)."""
    run_main(_args(work, 'ddp', DATA__BATCH_SIZE=2), nproc=2)
    diff = max_abs_diff(model_tensors(os.path.join(baseline, 'last.pth')),
                        model_tensors(os.path.join(run_folder(work['out'], 'ddp'), 'last.pth')))
    assert diff < 1e-5
    assert os.path.exists(os.path.join(run_folder(work['out'], 'ddp'), 'log_rank1.txt'))


def test_ema_is_the_same_on_every_rank(work):
    """The EMA starts from the weights every rank trains (rank 0's), not from each rank's own random init:
    validated on two processes, its per-epoch accuracies equal one process's."""
    ema = dict(TRAIN__EMA=True, TRAIN__EMA_DECAY=0.9)
    run_main(_args(work, 'ema1', **ema))
    run_main(_args(work, 'ema2', DATA__BATCH_SIZE=2, **ema), nproc=2)
    metrics = [[(m['val_ema_acc1'], m['val_ema_acc5'], m['val_acc1']) for m in
                map(json.loads, open(os.path.join(run_folder(work['out'], tag), 'metrics.jsonl')))]
               for tag in ('ema1', 'ema2')]
    assert metrics[0] == metrics[1]
    assert max_abs_diff(_weights_and_ema(run_folder(work['out'], 'ema1')),
                        _weights_and_ema(run_folder(work['out'], 'ema2'))) < 1e-5


def test_gradient_accumulation_2x2_matches_batch_4(work, baseline):
    """Also with gradient checkpointing, which must not change the numbers."""
    run_main(_args(work, 'accum', '--accumulation-steps', '2', '--use-checkpoint', DATA__BATCH_SIZE=2))
    folder = run_folder(work['out'], 'accum')
    assert torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['step'] == 8  # 4 updates per epoch
    assert max_abs_diff(model_tensors(os.path.join(baseline, 'last.pth')),
                        model_tensors(os.path.join(folder, 'last.pth'))) < 1e-5


def _weights_and_ema(folder):
    last = torch.load(os.path.join(folder, 'last.pth'), map_location='cpu', weights_only=True)
    return dict(last['model'], **{'ema.' + k: v for k, v in last['ema']['model'].items()})


@pytest.fixture(scope='module')
def random_baseline(work):
    run_main(_args(work, 'rand', **RANDOM_OPTS))
    folder = run_folder(work['out'], 'rand')
    assert 'val ema 2: top-1' in open(os.path.join(folder, 'log_rank0.txt')).read()  # EMA validated alongside
    return _weights_and_ema(folder)


def test_resume_after_kill_equals_uninterrupted_run(work, random_baseline):
    args = _args(work, 'killed', **RANDOM_OPTS)
    folder = run_folder(work['out'], 'killed')
    code, out = run_and_signal(args, os.path.join(folder, 'log_rank0.txt'), 'Train: [1/3][2/4]', KILL)
    assert code == -9
    assert torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['epoch'] in (0, 1)
    proc = run_main(args)  # the same command again: auto-resume from last.pth
    assert 'resuming from' in proc.stdout
    assert max_abs_diff(random_baseline, _weights_and_ema(folder)) == 0.0


def test_sigterm_saves_mid_epoch_and_resume_continues_exactly(work, random_baseline):
    args = _args(work, 'term', **RANDOM_OPTS)
    folder = run_folder(work['out'], 'term')
    code, out = run_and_signal(args, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/3][1/4]', TERM)
    assert code == 0, out[-3000:]
    saved = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert saved['epoch_step'] > 0 or saved['epoch'] < 2, 'the signal should interrupt the run before its end'
    assert 'SIGTERM received' in out
    proc = run_main(args)
    assert 'resuming from' in proc.stdout
    assert max_abs_diff(random_baseline, _weights_and_ema(folder)) == 0.0


def test_nan_loss_stops_without_writing_a_checkpoint(work, baseline):
    folder = run_folder(work['out'], 'nan')
    os.makedirs(folder)
    shutil.copy(os.path.join(baseline, 'ckpt_epoch_0.pth'), os.path.join(folder, 'last.pth'))
    before = open(os.path.join(folder, 'last.pth'), 'rb').read()
    proc = run_main(_args(work, 'nan', TRAIN__BASE_LR=1e30, TRAIN__OPTIMIZER__NAME='sgd', TRAIN__CLIP_GRAD=0.0,
                          TRAIN__WARMUP_EPOCHS=0), check=False)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'loss is nan' in log or 'loss is inf' in log
    assert 'no checkpoint was written' in log
    assert sorted(f for f in os.listdir(folder) if f.endswith('.pth')) == ['last.pth']
    assert open(os.path.join(folder, 'last.pth'), 'rb').read() == before


@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
def test_mixed_precision_paths_train_on_cpu(work, amp):
    """autocast fp16 (+ GradScaler) and bf16 on CPU. 8 frames: torch 2.14's CPU bf16 conv3d weight gradient
    has NaNs when the clip is shorter than the temporal kernel (4 frames, kernel 5), a PyTorch/oneDNN bug."""
    if not torch.amp.autocast_mode.is_autocast_available('cpu'):
        pytest.skip('no CPU autocast in this torch build')
    run_main(_args(work, amp, TRAIN__AMP=amp, TRAIN__EPOCHS=1, DATA__NUM_FRAMES=8))
    folder = run_folder(work['out'], amp)
    last = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert (last['scaler'] is not None) == (amp == 'fp16')
    assert all(torch.isfinite(t).all() for t in last['model'].values())
    log = open(os.path.join(folder, 'log_rank0.txt')).read()
    assert 'AMP: ' + amp in log and 'Train: [0/1][4/4]' in log


def test_too_many_unreadable_training_videos_stop_with_a_summary(work):
    train = os.path.join(work['data'], 'train_with_missing.csv')
    lines = open(os.path.join(work['data'], 'train.csv')).read().splitlines()
    with open(train, 'w') as f:
        f.write('\n'.join(lines[:5] + ['train/missing_one.mp4,0', 'train/missing_two.mp4,1'] + lines[5:]) + '\n')
    proc = run_main(_args(work, 'unreadable', DATA__TRAIN_FILE=train, DATA__MAX_UNREADABLE_FRACTION=0.05,
                          TRAIN__EPOCHS=1), check=False)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'unreadable' in log and 'missing_' in log
    assert not any(f.endswith('.pth') for f in os.listdir(run_folder(work['out'], 'unreadable')))
