"""The same global batch on another layout trains the same model: main.py runs (torchrun / gloo ranks on the CPU)
with every random draw of the step on (DropPath, mixup/cutmix, colour jitter, RandAugment, random erasing)."""
import os
import subprocess

import pytest
import torch

from engine_helpers import (REPO, TERM, TOY_CFG, env, make_tiny_data, model_tensors, run_folder, run_main,
                            signal_ranks_when, tiny_opts)

pytestmark = pytest.mark.slow

# one epoch of 16 clips; every draw of the training step on
RANDOM_STEP = dict(AUG__MIXUP=0.8, AUG__CUTMIX=1.0, MODEL__DROP_PATH_RATE=0.2, AUG__COLOR_JITTER=0.8, TRAIN__EPOCHS=1,
                   TRAIN__WARMUP_EPOCHS=0)
TOLERANCE = 1e-4  # of the largest weight: float summation order differs between layouts, nothing else


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp('recipe')
    return {'data': make_tiny_data(str(root / 'data'), num_val=2), 'out': str(root / 'out')}


def _args(work, tag, *extra, **opts):
    return ['--cfg', TOY_CFG, '--output', work['out'], '--tag', tag, *extra,
            '--opts', *tiny_opts(work['data'], **dict(RANDOM_STEP, **opts))]


def _relative_difference(folder_a, folder_b):
    a = model_tensors(os.path.join(folder_a, 'last.pth'))
    b = model_tensors(os.path.join(folder_b, 'last.pth'))
    largest = max(float(t.abs().max()) for t in a.values() if t.is_floating_point() and t.numel())
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()) / largest


def test_one_process_two_steps_two_processes_one_step_and_a_resume_on_one_process_train_the_same_model(work):
    """Global batch 4 of 2-clip micro-batches (4 updates): 1 process derives 2 accumulation steps and logs it;
    2 processes take 1; a 2-process run stopped mid-epoch (SIGTERM) and resumed on 1 process ends alike."""
    one = run_main(_args(work, 'one', DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=4)).stdout
    assert 'global batch 4 (TRAIN.GLOBAL_BATCH_SIZE): 1 process x 2 clips x 2 accumulation steps' in one
    run_main(_args(work, 'two', DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=4), nproc=2)
    assert _relative_difference(run_folder(work['out'], 'one'), run_folder(work['out'], 'two')) < TOLERANCE

    args = _args(work, 'moved', DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=4)
    folder = run_folder(work['out'], 'moved')
    results = signal_ranks_when([args] * 2, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/1][1/4]', TERM)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
    resumed = run_main(args).stdout
    assert 'resumed: epoch 0, step ' in resumed and 'step 4 of 4' not in resumed  # mid-epoch
    assert _relative_difference(run_folder(work['out'], 'one'), folder) < TOLERANCE


def test_a_shipped_script_on_one_gpu_trains_the_published_4_gpu_model(tmp_path):
    """scripts/kinetics400/video-focalnet_base.sh (published: 4 GPUs x 8 clips) on 1 process takes 4 accumulation
    steps, logs it and keeps the published LR; 1 x 4 = 4 x 1 with RandAugment and random erasing on (and DropPath,
    mixup/cutmix). --accumulation-steps that contradicts the global batch: one line, exit code 2."""
    data = make_tiny_data(str(tmp_path / 'data'), num_train=32, num_val=1)
    opts = tiny_opts(data, **dict(RANDOM_STEP, DATA__BATCH_SIZE=8, MODEL__NUM_CLASSES=8, DATA__NUM_CLASSES=8,
                                  TRAIN__LR_SCALING=True, TRAIN__BASE_LR=0.1, TRAIN__AMP='none',
                                  AUG__AUTO_AUGMENT='rand-m9-mstd0.5-inc1', AUG__REPROB=0.5, AUG__REMODE='pixel'))
    script = os.path.join(REPO, 'scripts', 'kinetics400', 'video-focalnet_base.sh')

    def launch(gpus, tag, *extra):
        run_env = dict(env(), GPUS=str(gpus), OUTPUT=str(tmp_path / 'out'))
        return subprocess.run(['bash', script, '--pretrained', '', '--tag', tag, *extra, '--opts', *opts],
                              cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600)
    refused = launch(1, 'refused', '--accumulation-steps', '2')
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('main.py: error: TRAIN.ACCUMULATION_STEPS (--accumulation-steps) '
                                                   '2: 1 process(es) x 8 clips x 2 = 16 clips per update')
    folders = {}
    for gpus in (1, 4):
        proc = launch(gpus, f'gpus{gpus}')
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert 'BASE_LR 0.1 -> 0.00625' in proc.stdout  # the published 4-GPU run's LR
        folders[gpus] = os.path.join(tmp_path, 'out', 'kinetics400', 'video-focalnet_base', f'gpus{gpus}')
    assert 'global batch 32 (TRAIN.GLOBAL_BATCH_SIZE): 1 process x 8 clips x 4 accumulation steps' in \
        open(os.path.join(folders[1], 'log_rank0.txt')).read()
    last = torch.load(os.path.join(folders[1], 'last.pth'), weights_only=True)
    assert (last['global_batch_size'], last['world_size'], last['accumulation_steps']) == (32, 1, 4)
    assert _relative_difference(folders[1], folders[4]) < TOLERANCE
