"""Clip transforms: one crop/flip/jitter per clip, the original's crop rules, test views, erasing, RandAugment."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from datasets.transforms import (MEAN, STD, EvalTransform, RandAugment, TrainTransform, adjust_hue, apply_color_jitter,
                                 apply_random_erasing, center_crop_box, normalize_clip, random_erasing_boxes,
                                 random_resized_crop_box, short_side_size, three_crop_boxes, train_resize_size)


def textured(height, width, seed=0):
    """A smooth random texture (uint8 HxWx3): interpolation-friendly but position-revealing."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(30, 220, (1, 3, height // 8 + 1, width // 8 + 1))).float()
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode='bilinear', align_corners=False)
    return fine[0].round().to(torch.uint8)


def stamped_clip(num_frames=6, height=48, width=64):
    """Frames identical except a bright frame-number stamp in the top-left 6x6 corner."""
    frames = textured(height, width).unsqueeze(0).repeat(num_frames, 1, 1, 1)
    for t in range(num_frames):
        frames[t, :, :6, :6] = 30 + 35 * t
    return frames


def test_every_frame_gets_the_same_crop_flip_and_colour():
    clip = stamped_clip()
    transform = TrainTransform(input_size=32, flip_ratio=0.5, color_jitter=0.8, gray_scale=0.2)
    flipped = unflipped = 0
    for seed in range(40):
        out, _ = transform(clip, np.random.default_rng(seed))
        assert out.shape == (6, 3, 32, 32) and out.dtype == torch.uint8
        diffs = (out[1:].int() - out[0].int()).abs().amax(dim=1)          # (T-1, H, W)
        boxes = set()
        for diff in diffs:
            ys, xs = torch.nonzero(diff > 2, as_tuple=True)
            if len(ys) == 0:
                boxes.add(None)
                continue
            box = (ys.min().item(), ys.max().item(), xs.min().item(), xs.max().item())
            boxes.add(box)
            outside = diff.clone()
            outside[box[0]:box[1] + 1, box[2]:box[3] + 1] = 0
            assert outside.max() <= 2, f"seed {seed}: frames differ outside the stamp"
        # the stamp sits at one place in every frame: the same crop and flip; it touches the top edge
        # and the left (not flipped) or the right (flipped) edge
        assert len(boxes) == 1, f"seed {seed}: stamp moves between frames {boxes}"
        box = boxes.pop()
        if box is not None:
            assert box[0] == 0 and (box[2] == 0 or box[3] == 31)
            flipped += box[3] == 31 and box[2] > 0
            unflipped += box[2] == 0 and box[3] < 31
    assert flipped and unflipped


def test_colour_jitter_per_clip_and_per_frame():
    clip = textured(40, 40).unsqueeze(0).repeat(4, 1, 1, 1)
    per_clip = TrainTransform(32, flip_ratio=0.0, color_jitter=1.0, gray_scale=0.0)
    per_frame = TrainTransform(32, flip_ratio=0.0, color_jitter=1.0, color_jitter_per_frame=True, gray_scale=0.0)
    plain = TrainTransform(32, flip_ratio=0.0, color_jitter=0.0, gray_scale=0.0)
    a, _ = per_clip(clip, np.random.default_rng(1))
    b, _ = per_frame(clip, np.random.default_rng(1))
    c, _ = plain(clip, np.random.default_rng(1))
    assert (a == a[0]).all()                       # identical frames stay identical
    assert not (b == b[0]).all()                   # the original's independent draws per frame
    assert (a != c).any()                          # jitter did something


def test_train_transform_is_a_function_of_the_generator():
    clip = stamped_clip()
    transform = TrainTransform(32, auto_augment='rand-m9-mstd0.5-inc1', reprob=1.0, recount=3)
    a, boxes_a = transform(clip, np.random.default_rng(7))
    b, boxes_b = transform(clip, np.random.default_rng(7))
    assert (a == b).all() and (boxes_a == boxes_b).all()
    assert boxes_a.shape == (3, 4)


class ScriptedUniform:
    def __init__(self, uniforms, integers=()):
        self.uniforms, self.ints, self.calls = list(uniforms), list(integers), []

    def uniform(self, low, high, size=None):
        self.calls.append(('uniform', round(low, 4), round(high, 4), size))
        return np.asarray(self.uniforms.pop(0))

    def integers(self, low, high=None, size=None):
        self.calls.append(('integers', low, high))
        return self.ints.pop(0)


def test_random_resized_crop_box_rule():
    # ratio 1 and area 0.25 of 100x60: side round(sqrt(1500)) = 39; left in [0, 61], top in [0, 21]
    rng = ScriptedUniform([np.zeros(10), np.full(10, 0.25)], integers=[61, 5])
    assert random_resized_crop_box(60, 100, rng) == (5, 61, 39, 39)
    assert rng.calls == [('uniform', round(math.log(3 / 4), 4), round(math.log(4 / 3), 4), 10),
                         ('uniform', 0.08, 1.0, 10), ('integers', 0, 62), ('integers', 0, 22)]
    # nothing fits in 10 attempts: the centred square of the short side
    rng = ScriptedUniform([np.full(10, math.log(4 / 3)), np.ones(10)])
    assert random_resized_crop_box(60, 100, rng) == (0, 20, 60, 60)
    real = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(256, 340, real)
        assert 0 <= top <= 256 - h and 0 <= left <= 340 - w
        assert 0.07 <= h * w / (256 * 340) <= 1.0


def test_test_crop_rules():
    assert train_resize_size(224) == 256 and train_resize_size(64) == 73
    assert short_side_size(240, 427, 256) == (256, 455)
    assert short_side_size(256, 340, 256) == (256, 340)
    assert center_crop_box(36, 40, 32) == (2, 4, 32, 32)
    # the original's order (left, right, centre) and offsets (0, 2 * step, step), step = (57 - 32) // 2
    assert three_crop_boxes(32, 57, 32) == [(0, 0, 32, 32), (0, 24, 32, 32), (0, 12, 32, 32)]
    assert three_crop_boxes(50, 32, 32) == [(0, 0, 32, 32), (18, 0, 32, 32), (9, 0, 32, 32)]


def test_eval_transform_views():
    frames = textured(48, 64).unsqueeze(0).repeat(3, 1, 1, 1)
    one = EvalTransform(32, num_crop=1)(frames)
    resized = F.resize(frames, [36, 48], antialias=False)                  # short side int(256/224*32) = 36
    assert one.shape == (1, 3, 3, 32, 32)
    assert (one[0] == resized[..., 2:34, 8:40]).all()
    three = EvalTransform(32, num_crop=3)(frames)
    resized = F.resize(frames, [32, 43], antialias=False)                  # short side 32, long int(42.67 + .5)
    assert three.shape == (3, 3, 3, 32, 32)
    for crop, left in zip(three, (0, 10, 5)):
        assert (crop == resized[..., left:left + 32]).all()
    with pytest.raises(ValueError, match='TEST.NUM_CROP'):
        EvalTransform(32, num_crop=5)


def test_normalize_clip():
    imgs = torch.tensor(MEAN).round().to(torch.uint8).view(1, 1, 3, 1, 1).repeat(2, 4, 1, 5, 5)
    out = normalize_clip(imgs)
    assert out.dtype == torch.float32 and out.shape == imgs.shape
    expected = (torch.tensor(MEAN).round() - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[0, 0, :, 0, 0], expected)
    assert normalize_clip(imgs, torch.bfloat16).dtype == torch.bfloat16
    white = normalize_clip(torch.full((3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(white[:, 0, 0], (255 - torch.tensor(MEAN)) / torch.tensor(STD))
    with pytest.raises(ValueError, match='3 channels'):
        normalize_clip(torch.zeros(2, 4, 4, dtype=torch.uint8))


def test_random_erasing_boxes_and_application():
    rng = np.random.default_rng(0)
    assert (random_erasing_boxes(32, 32, rng, probability=0.0) == 0).all()
    areas = []
    for _ in range(200):
        boxes = random_erasing_boxes(32, 40, rng, probability=1.0, max_count=1)
        top, left, h, w = boxes[0]
        assert h > 0 and top + h <= 32 and left + w <= 40
        areas.append(h * w / (32 * 40))
    assert 0.015 <= min(areas) and max(areas) <= 0.36
    imgs = torch.zeros(2, 4, 3, 32, 40)
    boxes = torch.tensor([[[3, 5, 10, 8]], [[0, 0, 0, 0]]])
    out = apply_random_erasing(imgs.clone(), boxes, mode='pixel', generator=torch.Generator().manual_seed(0))
    region = out[0, :, :, 3:13, 5:13]
    assert (region != 0).all() and 0.8 < region.std() < 1.2
    assert not torch.equal(region[0], region[1])              # fresh noise per frame, same box
    mask = torch.ones_like(out, dtype=torch.bool)
    mask[0, :, :, 3:13, 5:13] = False
    assert (out[mask] == 0).all()                             # nothing else touched, sample 1 kept
    ones = torch.ones(1, 2, 3, 8, 8)
    const = apply_random_erasing(ones.clone(), torch.tensor([[[1, 1, 2, 2]]]), mode='const')
    assert const[0, :, :, 1:3, 1:3].abs().sum() == 0 and const.sum() == 2 * 3 * (64 - 4)
    rand = apply_random_erasing(ones.clone(), torch.tensor([[[1, 1, 2, 2]]]), mode='rand')
    assert torch.equal(rand[0, 0, :, 1:3, 1:3], rand[0, 1, :, 1:3, 1:3])
    with pytest.raises(ValueError, match='AUG.REMODE'):
        apply_random_erasing(ones, torch.tensor([[[1, 1, 2, 2]]]), mode='noise')


def test_fast_hue_matches_torchvision():
    imgs = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    imgs[0, :, :5] = 77                                   # grey pixels (no hue)
    imgs[1, 1] = imgs[1, 0]                               # ties between channels
    for hue in (-0.5, -0.1, -0.03, 0.0, 0.05, 0.1, 0.5):
        diff = (adjust_hue(imgs, hue).int() - F.adjust_hue(imgs, hue).int()).abs()
        assert diff.max() <= 1, hue
    with pytest.raises(ValueError):
        adjust_hue(imgs, 0.7)


def test_rand_augment_parsing_and_clip_consistency():
    ra = RandAugment.from_string('rand-m9-mstd0.5-inc1')
    assert (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob) == (2, 9.0, 0.5, 0.5)
    assert 'PosterizeIncreasing' in ra.op_names and 'Posterize' not in ra.op_names
    ra = RandAugment.from_string('rand-m7-n3-mstd101-p1.0')
    assert ra.num_ops == 3 and ra.magnitude_std == float('inf') and ra.prob == 1.0
    for bad in ('augmix-m5', 'rand-m9-q3', 'rand-mx'):
        with pytest.raises(ValueError, match='AUG.AUTO_AUGMENT'):
            RandAugment.from_string(bad)
    clip = textured(32, 32).unsqueeze(0).repeat(3, 1, 1, 1)
    ra = RandAugment(num_ops=1, magnitude=9, magnitude_std=0, prob=1.0, increasing=True)
    for name in ra.op_names:   # every op: uint8 in, uint8 out, the same result on identical frames
        ra.op_names = [name]
        out = ra(clip, np.random.default_rng(0))
        assert out.shape == clip.shape and out.dtype == torch.uint8, name
        assert (out == out[0]).all(), name
        assert name in ('Equalize',) or name.startswith(('Solarize', 'Posterize', 'Auto')) or (out != clip).any(), name
    import pickle
    restored = pickle.loads(pickle.dumps(RandAugment.from_string('rand-m9-mstd0.5-inc1')))
    assert (restored(clip, np.random.default_rng(3)) == RandAugment.from_string('rand-m9-mstd0.5-inc1')(
        clip, np.random.default_rng(3))).all()


def test_fused_colour_jitter_matches_torchvision_ops():
    imgs = textured(24, 24).unsqueeze(0).repeat(2, 1, 1, 1)
    imgs[1] = 255 - imgs[1]
    factors = (1.3, 0.7, 1.15, 0.08)
    reference = [lambda x: F.adjust_brightness(x, 1.3),
                 lambda x: F.adjust_contrast(x.permute(1, 0, 2, 3).reshape(3, 48, 24), 0.7).reshape(
                     3, 2, 24, 24).permute(1, 0, 2, 3),           # the clip's mean grey, not each frame's
                 lambda x: F.adjust_saturation(x, 1.15),
                 lambda x: F.adjust_hue(x, 0.08)]
    for op in range(4):
        ours = apply_color_jitter(imgs, [op], factors).int()
        assert (ours - reference[op](imgs).int()).abs().max() <= 1, op
    chained = imgs
    for op in (2, 0, 3, 1):
        chained = reference[op](chained)
    # torchvision truncates to uint8 after every op (about -0.5 each); the fused version rounds once
    gap = apply_color_jitter(imgs, [2, 0, 3, 1], factors).float() - chained.float()
    assert 0 <= gap.mean() < 2.5 and gap.abs().max() <= 6
