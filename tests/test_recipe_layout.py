"""The recipe's global batch on any number of processes (engine/layout.py) and the step's randomness keyed by the
micro-batch (engine/step_random.py, Mixup.reseed): in-process checks, no subprocess."""
import logging
import os
import re

import pytest
import torch

from engine.config import apply_lr_scaling, load_config
from engine.layout import accumulation_for, apply_global_batch
from engine.step_random import keyed_randomness, micro_batch_index
from engine_helpers import REPO

from datasets.mixup import Mixup
from models.layers import DropPath

K400_BASE = os.path.join(REPO, 'configs', 'kinetics400', 'video-focalnet_base.yaml')
PUBLISHED = re.compile(r'# Published recipe: (\d+) GPUs x (\d+) clips')


def _shipped_scripts():
    found = []
    for dataset in sorted(os.listdir(os.path.join(REPO, 'scripts'))):
        folder = os.path.join(REPO, 'scripts', dataset)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            match = PUBLISHED.search(open(os.path.join(folder, name)).read())
            if match:
                found.append((os.path.join('configs', dataset, name.replace('.sh', '.yaml')),
                              int(match.group(1)) * int(match.group(2))))
    return found


@pytest.mark.parametrize('config,published', _shipped_scripts())
def test_each_shipped_config_records_the_global_batch_of_its_released_script(config, published):
    c = load_config(os.path.join(REPO, config))
    assert c.TRAIN.GLOBAL_BATCH_SIZE == published
    assert c.TRAIN.GLOBAL_BATCH_SIZE % c.DATA.BATCH_SIZE == 0


def test_the_released_scripts_global_batches():
    assert dict(_shipped_scripts()) == {
        'configs/kinetics400/video-focalnet_tiny.yaml': 32, 'configs/kinetics400/video-focalnet_base.yaml': 32,
        'configs/kinetics400/video-focalnet_small.yaml': 64, 'configs/kinetics600/video-focalnet_base.yaml': 32,
        'configs/ssv2/video-focalnet_base.yaml': 128, 'configs/diving48/video-focalnet_base.yaml': 32,
        'configs/activitynet/video-focalnet_base.yaml': 32}


def test_fewer_gpus_accumulate_to_the_published_global_batch_with_its_lr(caplog):
    published = apply_lr_scaling(apply_global_batch(load_config(K400_BASE), 4), 4)
    with caplog.at_level(logging.INFO, logger='engine.layout'):
        caplog.clear()
        two = apply_global_batch(load_config(K400_BASE), 2)
    assert (published.TRAIN.ACCUMULATION_STEPS, two.TRAIN.ACCUMULATION_STEPS) == (1, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ['global batch 32 (TRAIN.GLOBAL_BATCH_SIZE): 2 processes x 8 clips x 2 accumulation steps']
    two = apply_lr_scaling(two, 2)
    assert two.TRAIN.BASE_LR == pytest.approx(0.00625) and published.TRAIN.BASE_LR == pytest.approx(0.00625)
    assert two.TRAIN.MIN_LR == pytest.approx(published.TRAIN.MIN_LR)
    # less memory per GPU: 4 clips per process on 2 GPUs reach it with 4 steps
    small = apply_global_batch(load_config(K400_BASE, batch_size=4), 2)
    assert small.TRAIN.ACCUMULATION_STEPS == 4


def test_a_layout_that_cannot_reach_the_global_batch_is_refused_naming_the_nearest():
    with pytest.raises(Exception) as e:
        apply_global_batch(load_config(K400_BASE), 3)
    message = str(e.value)
    assert type(e.value).__name__ == 'ConfigError' and '\n' not in message
    assert message.startswith('TRAIN.GLOBAL_BATCH_SIZE 32: 3 process(es) x DATA.BATCH_SIZE 8 = 24 clips')
    assert '2 processes x 8 clips x 2 accumulation steps, 4 processes x 8 clips x 1 accumulation step' in message
    with pytest.raises(Exception) as e:  # more GPUs than the recipe: fewer clips per process
        accumulation_for(32, 8, 8)
    assert '8 processes x 4 clips x 1 accumulation step' in str(e.value)
    assert '4 processes x 8 clips x 1 accumulation step' in str(e.value)


def test_accumulation_steps_that_contradict_the_global_batch_are_an_error_unless_it_is_overridden_too():
    with pytest.raises(Exception) as e:
        apply_global_batch(load_config(K400_BASE, accumulation_steps=16), 4)
    assert '--accumulation-steps) 16: 4 process(es) x 8 clips x 16 = 512 clips per update' in str(e.value)
    assert 'TRAIN.GLOBAL_BATCH_SIZE 512, or 0' in str(e.value)
    agreed = apply_global_batch(load_config(K400_BASE, accumulation_steps=2), 2)  # the same global batch: fine
    assert agreed.TRAIN.ACCUMULATION_STEPS == 2
    overridden = apply_global_batch(load_config(K400_BASE, ['TRAIN.GLOBAL_BATCH_SIZE', '512'],
                                                accumulation_steps=16), 4)
    assert overridden.TRAIN.ACCUMULATION_STEPS == 16
    free = apply_global_batch(load_config(K400_BASE, ['TRAIN.GLOBAL_BATCH_SIZE', '0'], accumulation_steps=16), 4)
    assert free.TRAIN.ACCUMULATION_STEPS == 16


def test_every_layout_of_a_global_batch_trains_the_same_micro_batches_in_each_update():
    """Rank r's k-th loader batch is micro-batch k x W + r of the epoch's order (the sampler's cut)."""
    def update_indices(world, accum, update):
        return sorted(micro_batch_index(update, m, accum, r, world) for r in range(world) for m in range(accum))
    for update in range(3):
        assert update_indices(1, 4, update) == update_indices(2, 2, update) == update_indices(4, 1, update) \
            == list(range(4 * update, 4 * update + 4))


def test_keyed_randomness_gives_a_micro_batch_the_same_draws_whatever_ran_before():
    drop = DropPath(0.5).train()
    x = torch.ones(6, 2, 3, 3, 4)
    with keyed_randomness(7, 1, 5, torch.device('cpu')):
        first = drop(x)
    torch.rand(100)  # another process / step drew something else before
    outside = torch.get_rng_state()
    with keyed_randomness(7, 1, 5, torch.device('cpu')):
        again = drop(x)
    assert torch.equal(torch.get_rng_state(), outside)  # the process's own stream is left where it was
    assert torch.equal(first, again)
    with keyed_randomness(7, 1, 6, torch.device('cpu')):
        other = drop(x)
    assert not torch.equal(first, other)


def test_mixup_reseeded_with_a_key_mixes_the_same_whatever_it_drew_before():
    imgs = torch.arange(4 * 2 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 2, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])
    results = []
    for rank, warm_up in ((0, 0), (1, 3)):
        mixup = Mixup(num_classes=4, seed=[0, rank, 1])
        for _ in range(warm_up):
            mixup(imgs, labels)
        mixup.reseed([0, 2, 9])
        results.append(mixup(imgs, labels))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    mixup = Mixup(num_classes=4)
    mixup.reseed([0, 2, 10])  # another micro-batch
    mixed, targets = mixup(imgs, labels)
    assert not (torch.equal(mixed, results[0][0]) and torch.equal(targets, results[0][1]))


@pytest.mark.parametrize('checkpointing', ['selective', 'full'])
def test_keyed_masks_are_replayed_by_activation_checkpointing(checkpointing):
    """Checkpointed blocks recompute their DropPath masks in the backward pass; the keyed default generator is
    saved and restored by checkpointing, so the gradients equal those of a run that keeps every activation."""
    from models import build_model
    from engine_helpers import TOY_CFG
    config = load_config(TOY_CFG, ['MODEL.DROP_PATH_RATE', '0.5', 'DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32',
                                   'DATA.INPUT_SIZE', '32', 'MODEL.FOCAL.EMBED_DIM', '8',
                                   'MODEL.FOCAL.DEPTHS', '[1,1,2,1]'])
    torch.manual_seed(0)
    model = build_model(config).train()
    clips = torch.randn(3, 4, 3, 32, 32)
    grads = []
    for mode in ('none', checkpointing):
        model.set_selective_checkpointing(mode == 'selective')
        model.set_grad_checkpointing(mode == 'full')
        model.zero_grad()
        with keyed_randomness(0, 0, 3, torch.device('cpu')):
            model(clips).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_a_runs_stored_config_trains_the_same_global_batch_on_another_layout(tmp_path):
    """config.yaml of a 2-process run holds its derived 2 accumulation steps: used as --cfg on 4 processes it
    takes 1 step, while the same value on the command line is checked against the global batch."""
    stored = tmp_path / 'config.yaml'
    stored.write_text(f"BASE: ['{K400_BASE}']\nTRAIN:\n  ACCUMULATION_STEPS: 2\n")
    assert apply_global_batch(load_config(str(stored)), 4).TRAIN.ACCUMULATION_STEPS == 1
    with pytest.raises(Exception, match='ACCUMULATION_STEPS'):
        apply_global_batch(load_config(str(stored), ['TRAIN.ACCUMULATION_STEPS', '2']), 4)
