"""Mixup / CutMix: target sums, lam == pixel fraction kept, one box per clip, modes, seeding, config."""
import pytest
import torch

from datasets.mixup import Mixup, build_mixup, smooth_one_hot
from engine.config import load_config

B, T, C, H, W = 6, 4, 3, 16, 20


def _constant_clips(batch=B):
    """Clip i is filled with the value i + 1, so every output pixel tells whose pixel it is."""
    values = torch.arange(1, batch + 1, dtype=torch.float32)
    return values.view(batch, 1, 1, 1, 1).expand(batch, T, C, H, W).contiguous()


def _check_cutmix_clip(out_clip, own_value, target_row):
    """One box for all frames/channels, and lam (target weight) == fraction of own pixels."""
    assert torch.equal(out_clip, out_clip[:1, :1].expand_as(out_clip)), 'same box on every frame/channel'
    plane = out_clip[0, 0]
    foreign = plane != own_value
    if foreign.any():
        partner_value = plane[foreign].unique()
        assert partner_value.numel() == 1
        rows, cols = foreign.any(1).nonzero().squeeze(1), foreign.any(0).nonzero().squeeze(1)
        # The foreign region is one axis-aligned rectangle.
        assert foreign.sum() == len(rows) * len(cols)
        assert foreign[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        partner = int(partner_value) - 1
        fraction = foreign.float().mean().item()
        assert target_row[partner].item() == pytest.approx(fraction, abs=1e-6)
    # Also when nothing was taken (empty box, or the sample drew itself as partner): weight 1.
    own = 1.0 - foreign.float().mean().item()
    assert target_row[int(own_value) - 1].item() == pytest.approx(own, abs=1e-6)


def test_smooth_one_hot_values():
    targets = smooth_one_hot(torch.tensor([0, 3]), 4, 0.1)
    assert targets[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    assert targets.sum(1).tolist() == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
def test_cutmix_lambda_is_pixel_fraction_and_box_is_per_clip(mode):
    mixup = Mixup(num_classes=B, mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode, label_smoothing=0.0, seed=1)
    clips, labels = _constant_clips(), torch.arange(B)
    seen_cut = False
    for _ in range(20):
        out, targets = mixup(clips, labels)
        assert torch.equal(clips, _constant_clips()), 'input must not be modified'
        assert targets.shape == (B, B) and torch.allclose(targets.sum(1), torch.ones(B))
        masks = []
        for i in range(B):
            _check_cutmix_clip(out[i], i + 1, targets[i])
            masks.append(out[i, 0, 0] != i + 1)
            seen_cut |= bool(masks[-1].any())
        if mode == 'batch':
            # One box for the whole batch: every clip that got a foreign patch got it at the same place.
            cut = [m for m in masks if m.any()]
            assert all(torch.equal(m, cut[0]) for m in cut)
    assert seen_cut


def test_pair_mode_swaps_within_pairs_and_elem_draws_per_sample():
    clips, labels = _constant_clips(), torch.arange(B)
    pair = Mixup(num_classes=B, mixup_alpha=0.0, cutmix_alpha=1.0, mode='pair', label_smoothing=0.0, seed=3)
    elem = Mixup(num_classes=B, mixup_alpha=0.0, cutmix_alpha=1.0, mode='elem', label_smoothing=0.0, seed=3)
    distinct_boxes = False
    for _ in range(10):
        out, _ = pair(clips, labels)
        for i in range(B):
            foreign = out[i, 0, 0] != i + 1
            if foreign.any():
                j = int(out[i, 0, 0][foreign][0]) - 1
                # j took i's pixels in exactly the same box.
                assert torch.equal(foreign, out[j, 0, 0] != j + 1)
                assert (out[j, 0, 0][foreign] == i + 1).all()
        out, _ = elem(clips, labels)
        cut = [out[i, 0, 0] != i + 1 for i in range(B) if (out[i, 0, 0] != i + 1).any()]
        distinct_boxes |= any(not torch.equal(m, cut[0]) for m in cut)
    assert distinct_boxes, 'elem mode draws a box per sample'


@pytest.mark.parametrize('mode', ['batch', 'elem', 'pair'])
def test_mixup_blends_whole_clips_consistently_with_targets(mode):
    mixup = Mixup(num_classes=B, mixup_alpha=0.8, cutmix_alpha=0.0, mode=mode, label_smoothing=0.0, seed=0)
    clips, labels = _constant_clips(), torch.arange(B)
    lams = set()
    for _ in range(5):
        out, targets = mixup(clips, labels)
        for i in range(B):
            value = out[i].flatten()[0].item()
            assert torch.allclose(out[i], torch.full_like(out[i], value)), 'Mixup blends whole clips'
            # value = lam * (i+1) + (1-lam) * (j+1) = sum_k targets[i, k] * (k+1)
            expected = (targets[i] * torch.arange(1, B + 1)).sum().item()
            assert value == pytest.approx(expected, rel=1e-5)
            lams.add(round(targets[i, i].item(), 6))
        assert torch.allclose(targets.sum(1), torch.ones(B))
    assert len(lams) > (2 if mode == 'batch' else B)


def test_mixup_prob_zero_only_smooths_and_switch_prob_selects():
    clips, labels = _constant_clips(), torch.tensor([0, 1, 2, 0, 1, 2])
    none = Mixup(num_classes=3, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0, label_smoothing=0.3)
    out, targets = none(clips, labels)
    assert torch.equal(out, clips)
    assert torch.allclose(targets, smooth_one_hot(labels, 3, 0.3))
    assert targets[0].tolist() == pytest.approx([0.8, 0.1, 0.1])

    def kinds(switch_prob):
        mixup = Mixup(num_classes=3, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=switch_prob, seed=0)
        result = set()
        for _ in range(10):
            out, _ = mixup(clips, labels)
            # CutMix copies pixels (integer values stay integers); Mixup blends them.
            result.add('mixup' if (out != out.round()).any() else 'cutmix')
        return result
    assert kinds(1.0) == {'cutmix'}
    assert kinds(0.0) == {'mixup'}


def test_seeded_and_resumable():
    clips = torch.randn(4, 2, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3])

    def run(mixup, n=4):
        return [mixup(clips, labels) for _ in range(n)]

    a = run(Mixup(num_classes=4, mode='elem', seed=7))
    b = run(Mixup(num_classes=4, mode='elem', seed=7))
    c = run(Mixup(num_classes=4, mode='elem', seed=8))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))

    mixup = Mixup(num_classes=4, seed=7)
    mixup(clips, labels)
    state = mixup.state_dict()
    after = mixup(clips, labels)
    resumed = Mixup(num_classes=4, seed=0)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(clips, labels)[0], after[0])


def test_set_epoch_reseeds_independently_of_history():
    clips, labels = torch.randn(4, 2, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    fresh = Mixup(num_classes=4, seed=7)
    used = Mixup(num_classes=4, seed=7)
    for _ in range(3):
        used(clips, labels)
    fresh.set_epoch(5)
    used.set_epoch(5)
    assert torch.equal(fresh(clips, labels)[0], used(clips, labels)[0])


def test_cutmix_minmax_box_sizes():
    mixup = Mixup(num_classes=B, mixup_alpha=0.0, cutmix_alpha=1.0, cutmix_minmax=(0.25, 0.5), mode='elem',
                  label_smoothing=0.0, seed=0)
    clips = _constant_clips()
    for _ in range(5):
        out, targets = mixup(clips, torch.arange(B))
        for i in range(B):
            foreign = out[i, 0, 0] != i + 1
            if foreign.any():
                h, w = foreign.any(1).sum().item(), foreign.any(0).sum().item()
                assert int(H * 0.25) <= h < int(H * 0.5) and int(W * 0.25) <= w < int(W * 0.5)
                _check_cutmix_clip(out[i], i + 1, targets[i])


def test_validation_errors_and_dtype():
    with pytest.raises(ValueError, match='both 0'):
        Mixup(num_classes=4, mixup_alpha=0, cutmix_alpha=0)
    with pytest.raises(ValueError, match='mode'):
        Mixup(num_classes=4, mode='pixel')
    with pytest.raises(ValueError, match='cutmix_minmax'):
        Mixup(num_classes=4, cutmix_minmax=(0.5, 0.2))
    with pytest.raises(TypeError, match='float'):
        Mixup(num_classes=4)(torch.zeros(2, 1, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r'labels must be in \[0, 4\)'):
        Mixup(num_classes=4)(torch.zeros(2, 1, 3, 4, 4), torch.tensor([0, 4]))
    # Half precision stays half; (B, 1) labels (the original's train shape) are accepted.
    out, targets = Mixup(num_classes=4, mode='elem')(torch.zeros(2, 1, 3, 4, 4, dtype=torch.bfloat16),
                                                      torch.tensor([[0], [1]]))
    assert out.dtype == torch.bfloat16 and targets.dtype == torch.float32


def test_build_mixup_from_config():
    config = load_config('configs/toy/video-focalnet_toy.yaml')
    assert build_mixup(config) is None
    config = load_config('configs/kinetics400/video-focalnet_tiny.yaml',
                         ['AUG.MIXUP_MODE', 'elem', 'AUG.CUTMIX_MINMAX', '(0.2, 0.8)', 'AUG.MIXUP_PROB', '0.5'])
    mixup = build_mixup(config, rank=1)
    assert (mixup.num_classes, mixup.mode, mixup.prob) == (400, 'elem', 0.5)
    assert mixup.cutmix_minmax == (0.2, 0.8) and mixup.label_smoothing == config.AUG.LABEL_SMOOTH
    # Ranks draw different streams.
    clips, labels = torch.randn(4, 2, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    assert not torch.equal(build_mixup(config, rank=0)(clips, labels)[0], mixup(clips, labels)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
def test_device_result_equals_cpu_result(mode):
    """Random draws happen on the CPU, so a CUDA batch is mixed exactly as the same batch on the CPU."""
    clips, labels = _constant_clips(), torch.arange(B)
    cpu = Mixup(num_classes=B, mode=mode, seed=11)
    gpu = Mixup(num_classes=B, mode=mode, seed=11)
    for _ in range(5):
        out_cpu, targets_cpu = cpu(clips, labels)
        out_gpu, targets_gpu = gpu(clips.cuda(), labels.cuda())
        assert out_gpu.device.type == targets_gpu.device.type == 'cuda'
        torch.testing.assert_close(out_gpu.cpu(), out_cpu)
        torch.testing.assert_close(targets_gpu.cpu(), targets_cpu)
