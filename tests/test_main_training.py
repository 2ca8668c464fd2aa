"""End-to-end training through main.py on a tiny toy set: world-size and accumulation equivalence, exact resume
after SIGKILL and after SIGTERM (mid-epoch), NaN stop, checkpoint layout. Subprocesses with OMP_NUM_THREADS=1."""
import json
import os
import shutil

import pytest
import torch

from engine_helpers import (KILL, TERM, TOY_CFG, make_tiny_data, max_abs_diff, model_tensors, run_and_signal,
                            run_folder, run_main, run_ranks, signal_ranks_when, tiny_opts)

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
    for key in ('model', 'optimizer', 'lr_scheduler', 'scaler', 'ema', 'max_accuracy', 'config', 'rng', 'rng_per_rank',
                'class_names', 'epoch_record', 'is_best', 'world_size', 'batch_size', 'accumulation_steps'):
        assert key in last
    assert last['world_size'] == 1 and last['accumulation_steps'] == 1 and last['epoch_record']['epoch'] == 1
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


def test_two_ranks_with_checkpointing_and_accumulation_train_and_resume_exactly(work):
    """DDP + activation checkpointing + no_sync() micro-batches: DDP's static_graph made the reducer fail
    (expect_autograd_hooks_ INTERNAL ASSERT). Both ranks get SIGTERM mid-epoch, save, and the rerun ends with
    the weights of the uninterrupted run, bit for bit (DropPath: each rank's own RNG state is restored)."""
    opts = dict(DATA__BATCH_SIZE=1, MODEL__DROP_PATH_RATE=0.2)   # 2 ranks x 1 clip x 2 micro-batches: 4 updates
    flags = ('--use-checkpoint', '--accumulation-steps', '2')
    run_ranks([_args(work, 'ddp-ckpt', *flags, **opts)] * 2)
    args = _args(work, 'ddp-ckpt-term', *flags, **opts)
    folder = run_folder(work['out'], 'ddp-ckpt-term')
    results = signal_ranks_when([args] * 2, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/2][1/4]', TERM)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    saved = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)
    assert (saved['epoch'], saved['world_size'], saved['batch_size'], saved['accumulation_steps']) == (-1, 2, 1, 2)
    assert 0 < saved['epoch_step'] < 4
    run_ranks([args] * 2)
    assert max_abs_diff(model_tensors(os.path.join(run_folder(work['out'], 'ddp-ckpt'), 'last.pth')),
                        model_tensors(os.path.join(folder, 'last.pth'))) == 0.0
    # the resumed epoch's line averages all of its updates (the running sums travel in last.pth), on 2 ranks too
    timing = ('epoch_time_s', 'data_wait_fraction')
    lines = [[{k: v for k, v in json.loads(line).items() if k not in timing}
              for line in open(os.path.join(run_folder(work['out'], tag), 'metrics.jsonl'))]
             for tag in ('ddp-ckpt', 'ddp-ckpt-term')]
    assert lines[1] == pytest.approx(lines[0], rel=1e-6, abs=1e-9)


def test_mid_epoch_resume_on_more_processes_continues_at_the_same_clip(work, baseline):
    """1 process x 4 clips, SIGTERM mid-epoch, resumed on 2 processes x 2 clips: the same global batches, so
    the run ends where the uninterrupted 1-process run does (up to float summation order)."""
    args = _args(work, 'grow')
    folder = run_folder(work['out'], 'grow')
    code, out = run_and_signal(args, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/2][1/4]', TERM)
    assert code == 0, out[-3000:]
    step = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['epoch_step']
    assert 0 < step < 4
    results = run_ranks([_args(work, 'grow', DATA__BATCH_SIZE=2)] * 2)
    assert f'resumed: epoch 0, step {step} of 4' in results[0][1]
    assert max_abs_diff(model_tensors(os.path.join(baseline, 'last.pth')),
                        model_tensors(os.path.join(folder, 'last.pth'))) < 1e-5


def test_mid_epoch_resume_on_fewer_processes_maps_the_position_by_clips(work):
    """2 processes x 2 clips (4 per update), SIGTERM after k updates; resumed on 1 process x 2 clips (2 per
    update) it continues at update 2k of 8: the clips consumed, not the count of the old updates. Another
    total batch is another run: it goes into a folder of its own (--tag) with --resume."""
    args = _args(work, 'shrink', DATA__BATCH_SIZE=2)
    folder = run_folder(work['out'], 'shrink')
    results = signal_ranks_when([args] * 2, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/2][1/4]', TERM)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
    step = torch.load(os.path.join(folder, 'last.pth'), weights_only=True)['epoch_step']
    assert 0 < step < 4
    out = run_main(_args(work, 'shrink-1', '--resume', os.path.join(folder, 'last.pth'), DATA__BATCH_SIZE=2)).stdout
    assert f'resumed: epoch 0, step {2 * step} of 8' in out
    trained = [line for line in out.splitlines() if 'Train: [0/2][' in line]
    assert f'Train: [0/2][{2 * step + 1}/8]' in trained[0] and len(trained) == 8 - 2 * step


def test_output_folders_not_shared_between_ranks(work, tmp_path):
    """Ranks whose OUTPUT differ (nodes without a shared folder): rank 0 decides what to resume; a rank
    without that file, or with another epoch's, stops every rank with one line naming it (no drift, no
    hang); with a copy of the files both resume at the same epoch, and the final test of every rank uses
    rank 0's best.pth."""
    def rank_args(rank, **extra):
        return ['--cfg', TOY_CFG, '--output', str(tmp_path / f'node{rank}'), '--tag', 'run',
                '--opts', *tiny_opts(work['data'], DATA__BATCH_SIZE=2, **extra)]
    folders = [run_folder(str(tmp_path / f'node{rank}'), 'run') for rank in (0, 1)]
    run_ranks([rank_args(0, TRAIN__EPOCHS=1), rank_args(1, TRAIN__EPOCHS=1)])
    assert os.path.isfile(os.path.join(folders[0], 'last.pth')) and not os.path.exists(os.path.join(folders[1], 'last.pth'))

    results = run_ranks([rank_args(0), rank_args(1)], check=False)
    assert [code for code, _ in results] == [2, 2]
    errors = [line for _, out in results for line in out.splitlines() if line.startswith('main.py: error:')]
    assert len(errors) == 1 and all(f'rank 1: {os.path.join(folders[1], "last.pth")}' in e for e in errors)

    stale = os.path.join(folders[1], 'last.pth')
    torch.save(dict(torch.load(os.path.join(folders[0], 'last.pth'), weights_only=True), epoch=5), stale)
    results = run_ranks([rank_args(0), rank_args(1)], check=False)
    assert [code for code, _ in results] == [2, 2] and 'holds epoch 5 update 0' in results[0][1]  # printed by rank 0 only

    for name in ('last.pth', 'ckpt_epoch_0.pth'):
        shutil.copy(os.path.join(folders[0], name), os.path.join(folders[1], name))
    results = run_ranks([rank_args(0, TRAIN__FINAL_TEST=True), rank_args(1, TRAIN__FINAL_TEST=True)])
    for rank in (0, 1):
        log = open(os.path.join(folders[rank], f'log_rank{rank}.txt')).read()
        assert 'resumed: epoch 1, step 0' in log and 'no best.pth' not in log and 'final test' in log
    assert torch.load(os.path.join(folders[0], 'last.pth'), weights_only=True)['epoch'] == 1


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
    # the start completed epoch 0's files from its last.pth (ckpt_epoch_0, best); nothing from the NaN state
    assert sorted(f for f in os.listdir(folder) if f.endswith('.pth')) == ['best.pth', 'ckpt_epoch_0.pth', 'last.pth']
    assert all(open(os.path.join(folder, f), 'rb').read() == before for f in os.listdir(folder) if f.endswith('.pth'))


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
