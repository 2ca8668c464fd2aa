"""The same global batch on another layout trains the same model: main.py runs (torchrun / gloo ranks on the CPU)
with every random draw of the step on (DropPath, mixup/cutmix, colour jitter, RandAugment, random erasing)."""
import os

import pytest

from engine_helpers import (TERM, TOY_CFG, make_tiny_data, model_tensors, run_folder, run_main, run_ranks,
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


def _relative_difference(work, tag_a, tag_b):
    a = model_tensors(os.path.join(run_folder(work['out'], tag_a), 'last.pth'))
    b = model_tensors(os.path.join(run_folder(work['out'], tag_b), 'last.pth'))
    largest = max(float(t.abs().max()) for t in a.values() if t.is_floating_point() and t.numel())
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()) / largest


def test_one_process_two_steps_two_processes_one_step_and_a_resume_on_one_process_train_the_same_model(work):
    """Global batch 4 of 2-clip micro-batches (4 updates): 1 process derives 2 accumulation steps and logs it;
    2 processes take 1; a 2-process run stopped mid-epoch (SIGTERM) and resumed on 1 process ends alike."""
    one = run_main(_args(work, 'one', DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=4)).stdout
    assert 'global batch 4 (TRAIN.GLOBAL_BATCH_SIZE): 1 process x 2 clips x 2 accumulation steps' in one
    run_main(_args(work, 'two', DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=4), nproc=2)
    assert _relative_difference(work, 'one', 'two') < TOLERANCE

    args = _args(work, 'moved', DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=4)
    folder = run_folder(work['out'], 'moved')
    results = signal_ranks_when([args] * 2, os.path.join(folder, 'log_rank0.txt'), 'Train: [0/1][1/4]', TERM)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
    resumed = run_main(args).stdout
    assert 'resumed: epoch 0, step ' in resumed and 'step 4 of 4' not in resumed  # mid-epoch
    assert _relative_difference(work, 'one', 'moved') < TOLERANCE


def test_one_process_four_steps_equals_four_processes_with_randaugment_and_random_erasing(work):
    extra = dict(DATA__BATCH_SIZE=2, TRAIN__GLOBAL_BATCH_SIZE=8, AUG__AUTO_AUGMENT='rand-m9-mstd0.5-inc1',
                 AUG__REPROB=0.5, AUG__REMODE='pixel')
    run_main(_args(work, 'one4', **extra))
    run_ranks([_args(work, 'four', **extra)] * 4)
    assert _relative_difference(work, 'one4', 'four') < TOLERANCE


def test_accumulation_steps_that_contradict_the_global_batch_exit_2_in_one_line(work):
    proc = run_main(_args(work, 'contra', '--accumulation-steps', '3', TRAIN__GLOBAL_BATCH_SIZE=8), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('main.py: error: TRAIN.ACCUMULATION_STEPS (--accumulation-steps) 3')
    assert 'TRAIN.GLOBAL_BATCH_SIZE 12, or 0' in lines[0]
    assert not os.path.exists(run_folder(work['out'], 'contra'))
