"""Clip transforms on uint8 tensors (T, 3, H, W); one set of spatial parameters per clip.

Training (spec 3.4, in this order):
1. resize the short side to ``int(256 / 224 * S)`` (S = DATA.INPUT_SIZE), bilinear without
   antialiasing (the original used OpenCV bilinear; new size rounded with +0.5 as mmcv did);
2. RandomResizedCrop box: area fraction U(0.08, 1), aspect ratio log-uniform in [3/4, 4/3], 10 candidates
   drawn at once (all ratios first, then all areas), the first that fits is placed uniformly, else the
   centred square of the short side; the crop is resized to S x S (aspect not kept);
3. horizontal flip with probability AUG.FLIP_RATIO;
4. RandAugment (new: AUG.AUTO_AUGMENT, timm's ``rand-m9-mstd0.5-inc1`` syntax), the same ops and
   magnitudes for every frame. Unlike timm, colour jitter is not switched off when RandAugment is on:
   the two keys act independently (set AUG.COLOR_JITTER 0 for timm's behaviour);
5. colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, random order) with probability
   AUG.COLOR_JITTER per clip. The original drew the factors and order separately for every frame
   (temporally inconsistent); here one draw serves the whole clip, and contrast blends towards the
   clip's mean grey (not each frame's), so every frame gets the same colour mapping.
   AUG.COLOR_JITTER_PER_FRAME True restores the original (per-frame draws and means). The four ops run
   in one float pass (torchvision's definitions, rounded once at the end instead of truncated after
   every op) with a closed-form HSV hue rotation: hue dominates the augmentation cost;
6. grayscale (luma replicated to 3 channels) with probability AUG.GRAY_SCALE, whole clip;
7. random erasing (new: AUG.REPROB/REMODE/RECOUNT, timm's rule, the same box on every frame). Its
   boxes are drawn here, with the sample's generator, but applied on the device after normalisation by
   ``apply_random_erasing`` (its fill values are noise in normalised units, which a uint8 clip cannot
   hold): the training batch carries them as ``erase_boxes``;
8. normalisation (mean 123.675, 116.28, 103.53 / std 58.395, 57.12, 57.375 on 0-255) is NOT done in the
   loader workers: ``normalize_clip`` runs on the device, so uint8 (4x smaller) crosses the
   process boundary and the PCIe bus.

Test views (spec 3.5): 1 crop = short side ``int(256 / 224 * S)`` then the centre S x S crop;
3 crops = short side S then three S x S crops along the long side in the original's order
left/top, right/bottom, centre, offsets ``0, 2 * step, step`` with ``step = (long - S) // 2``.

All randomness comes from the ``numpy.random.Generator`` passed in (one per sample, see
``video_dataset.py``), never from global RNGs.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
FILL = tuple(int(round(m)) for m in MEAN)   # fill of rotated/sheared/translated borders (timm's img_mean)

BILINEAR = InterpolationMode.BILINEAR


# ---------------------------------------------------------------------------------------------------------
# Normalisation and random erasing (on the device)
# ---------------------------------------------------------------------------------------------------------
def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU ``tensor`` on ``device`` without a CPU-GPU sync: a copy from pageable memory blocks the host until
    the GPU has caught up with its queue, one from pinned memory does not (PyTorch's caching host allocator
    keeps the pinned block until the copy has run). On the CPU: ``tensor.to(device)``."""
    if device.type == 'cuda':
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


_NORMALIZATION_CONSTANTS: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}


def _normalization_constants(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mean, 1 / std)`` as float32 (3, 1, 1) tensors on ``device``, made once per device: building them
    per batch with ``torch.tensor(..., device='cuda')`` is a blocking host-to-device copy (a CPU-GPU sync
    every micro-batch)."""
    constants = _NORMALIZATION_CONSTANTS.get(device)
    if constants is None:
        mean = torch.tensor(MEAN, device=device, dtype=torch.float32).view(3, 1, 1)
        inv_std = 1.0 / torch.tensor(STD, device=device, dtype=torch.float32).view(3, 1, 1)
        constants = _NORMALIZATION_CONSTANTS[device] = (mean, inv_std)
    return constants


def normalize_clip(imgs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 clips (..., 3, H, W) -> normalised ``dtype``, on whatever device ``imgs`` is on."""
    if imgs.shape[-3] != 3:
        raise ValueError(f"normalize_clip: expected 3 channels at dim -3, got shape {tuple(imgs.shape)}")
    mean, inv_std = _normalization_constants(imgs.device)
    out = imgs.to(torch.float32).sub_(mean).mul_(inv_std)
    return out if dtype == torch.float32 else out.to(dtype)


ERASE_MODES = ('const', 'rand', 'pixel')


def random_erasing_boxes(height: int, width: int, rng: np.random.Generator, probability: float,
                         max_count: int = 1, min_count: int = 1, min_area: float = 0.02,
                         max_area: float = 1 / 3, min_aspect: float = 0.3) -> np.ndarray:
    """timm's RandomErasing box rule; returns (max_count, 4) int64 rows ``top, left, h, w`` (h = 0: none)."""
    boxes = np.zeros((max(1, max_count), 4), dtype=np.int64)
    if probability <= 0 or rng.random() > probability:
        return boxes
    area = height * width
    count = min_count if min_count == max_count else int(rng.integers(min_count, max_count + 1))
    log_ratio = (math.log(min_aspect), math.log(1 / min_aspect))
    for n in range(count):
        for _ in range(10):
            target_area = rng.uniform(min_area, max_area) * area / count
            aspect = math.exp(rng.uniform(*log_ratio))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < width and h < height:
                boxes[n] = (int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w)
                break
    return boxes


def apply_random_erasing(imgs: torch.Tensor, boxes: torch.Tensor, mode: str = 'pixel',
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Erase ``boxes`` (B, R, 4) from normalised clips (B, T, C, H, W) in place; returns ``imgs``.

    Every frame of a clip loses the same box. Fill (timm's modes, in normalised units): 'const' zeros
    (the mean colour), 'rand' one normal colour per box, 'pixel' normal noise per pixel and frame.
    Call it after ``normalize_clip`` and before mixup/cutmix, as timm does for images.
    """
    if mode not in ERASE_MODES:
        raise ValueError(f"AUG.REMODE: expected one of {list(ERASE_MODES)}, got {mode!r}")
    if boxes is None or boxes.numel() == 0:
        return imgs
    t, c = imgs.shape[1], imgs.shape[2]
    for b, row in enumerate(boxes.tolist()):
        for top, left, h, w in row:
            if h <= 0 or w <= 0:
                continue
            region = imgs[b, :, :, top:top + h, left:left + w]
            if mode == 'const':
                region.zero_()
            elif mode == 'rand':
                region.copy_(torch.randn((1, c, 1, 1), generator=generator, device=imgs.device,
                                         dtype=torch.float32).expand_as(region))
            else:
                region.copy_(torch.randn((t, c, h, w), generator=generator, device=imgs.device,
                                         dtype=torch.float32))
    return imgs


# ---------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------
def train_resize_size(input_size: int) -> int:
    """Short side before cropping: int(256 / 224 * INPUT_SIZE) (256 for 224)."""
    return int(256 / 224 * input_size)


def short_side_size(height: int, width: int, size: int) -> Tuple[int, int]:
    """mmcv's keep-ratio rescale: the short side becomes ``size``, sizes rounded with +0.5."""
    scale = size / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_short_side(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (no antialiasing, as OpenCV) so that the short side is ``size``."""
    new_h, new_w = short_side_size(frames.shape[-2], frames.shape[-1], size)
    return F.resize(frames, [new_h, new_w], interpolation=BILINEAR, antialias=False)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            area_range: Tuple[float, float] = (0.08, 1.0),
                            ratio_range: Tuple[float, float] = (3 / 4, 4 / 3),
                            max_attempts: int = 10) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)`` by the original's rule (mmaction2 RandomResizedCrop)."""
    area = height * width
    ratios = np.exp(rng.uniform(math.log(ratio_range[0]), math.log(ratio_range[1]), size=max_attempts))
    areas = rng.uniform(area_range[0], area_range[1], size=max_attempts) * area
    widths = np.round(np.sqrt(areas * ratios)).astype(np.int64)
    heights = np.round(np.sqrt(areas / ratios)).astype(np.int64)
    for w, h in zip(widths.tolist(), heights.tolist()):
        if h <= height and w <= width:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return top, left, h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def center_crop_box(height: int, width: int, size: int) -> Tuple[int, int, int, int]:
    """mmaction2 CenterCrop: offsets (dim - size) // 2."""
    return (height - size) // 2, (width - size) // 2, size, size


def three_crop_boxes(height: int, width: int, size: int) -> List[Tuple[int, int, int, int]]:
    """mmaction2 ThreeCrop in its order: left/top, right/bottom, centre (offsets 0, 2 * step, step)."""
    if height == size:
        step = (width - size) // 2
        return [(0, 0, size, size), (0, 2 * step, size, size), (0, step, size, size)]
    if width == size:
        step = (height - size) // 2
        return [(0, 0, size, size), (2 * step, 0, size, size), (step, 0, size, size)]
    raise ValueError(f"three crops of {size} need a side of exactly {size}, got {height}x{width}")


# ---------------------------------------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------------------------------------
_HUE_CHANNEL_OFFSETS = (5.0, 3.0, 1.0)   # R, G, B in the closed-form HSV -> RGB


def _rotate_hue(x: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """Hue rotation of float RGB (..., 3, H, W) on the 0-255 scale (not rounded).

    Rotating the hue keeps V = max and the spread max - min, so each channel is rebuilt directly as
    ``max - spread * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + hue6) mod 6`` (n = 5, 3, 1 for R, G, B),
    the closed-form HSV->RGB: about half the passes over memory of a full RGB->HSV->RGB round trip.
    A clip is processed two frames at a time so that the temporaries stay in the CPU cache (~25% faster).
    """
    if x.ndim == 4 and x.shape[0] > 2:
        return torch.cat([_rotate_hue(chunk, hue_factor) for chunk in x.split(2)])
    r, g, b = x.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    spread = maxc - torch.minimum(torch.minimum(r, g), b)
    is_r, is_g = maxc == r, maxc == g
    numerator = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    sector_start = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))
    hue6 = numerator.div_(spread.clamp(min=1e-6)).add_(sector_start).add_(6.0 * hue_factor + 6.0)
    n = torch.tensor(_HUE_CHANNEL_OFFSETS, device=x.device).view(3, 1, 1)
    k = (hue6.unsqueeze(-3) + n).remainder_(6.0)
    k = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return k.mul_(spread.unsqueeze(-3)).neg_().add_(maxc.unsqueeze(-3))


def adjust_hue(img: torch.Tensor, hue_factor: float) -> torch.Tensor:
    """torchvision's ``adjust_hue`` for uint8 (..., 3, H, W), about 2x faster, within 1 of its output."""
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor must lie in [-0.5, 0.5], got {hue_factor}")
    return _rotate_hue(img.to(torch.float32), hue_factor).round_().clamp_(0, 255).to(img.dtype)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of float RGB (..., 3, H, W) -> (..., 1, H, W), torchvision's weights."""
    r, g, b = x.unbind(-3)
    return (r * 0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def _clip_as_image(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) -> (3, T*H, W): the frames stacked vertically into one image."""
    t, c, h, w = frames.shape
    return frames.permute(1, 0, 2, 3).reshape(c, t * h, w)


def per_clip_statistics(fn):
    """Make an op that uses image statistics (mean, min/max, histogram) compute them over the whole
    clip, so that every frame is changed by the same mapping; a single (3, H, W) frame passes through."""
    def op(frames: torch.Tensor, *args) -> torch.Tensor:
        if frames.ndim == 3:
            return fn(frames, *args)
        t, c, h, w = frames.shape
        return fn(_clip_as_image(frames), *args).reshape(c, t, h, w).permute(1, 0, 2, 3)
    op.__name__ = fn.__name__
    return op


adjust_contrast = per_clip_statistics(F.adjust_contrast)
autocontrast = per_clip_statistics(F.autocontrast)
equalize = per_clip_statistics(F.equalize)


def color_jitter_params(rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                        saturation: float = 0.2, hue: float = 0.1) -> Tuple[np.ndarray, tuple]:
    """torchvision ColorJitter.get_params with our generator: (op order, (b, c, s, h) factors)."""
    order = rng.permutation(4)
    factors = (rng.uniform(1 - brightness, 1 + brightness), rng.uniform(1 - contrast, 1 + contrast),
               rng.uniform(1 - saturation, 1 + saturation), rng.uniform(-hue, hue))
    return order, factors


def apply_color_jitter(frames: torch.Tensor, order: Sequence[int], factors: Sequence[float]) -> torch.Tensor:
    """ColorJitter with fixed factors on uint8 (..., 3, H, W): one float conversion for all four ops.

    Brightness, contrast, saturation and hue follow torchvision's definitions (blend with black, with the
    mean grey, with the per-pixel grey, HSV hue rotation) in ``order``; unlike chaining torchvision's
    uint8 ops there is no rounding between them. Contrast blends towards the mean grey of everything
    passed in: the whole clip for (T, 3, H, W), one frame for (3, H, W) (the per-frame mode).
    """
    brightness, contrast, saturation, hue = factors
    x = frames.to(torch.float32)
    for op in order:
        if op == 0:
            x.mul_(brightness)
        elif op == 1:
            mean = _grey(x).mean()
            x.mul_(contrast).add_((1.0 - contrast) * mean)
        elif op == 2:
            grey = _grey(x).mul_(1.0 - saturation)
            x.mul_(saturation).add_(grey)
        else:
            x = _rotate_hue(x, hue)
        x.clamp_(0.0, 255.0)
    return x.round_().to(frames.dtype)


# ---------------------------------------------------------------------------------------------------------
# RandAugment (timm semantics, one draw per clip)
# ---------------------------------------------------------------------------------------------------------
def _negate(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def _solarize(img: torch.Tensor, threshold: int) -> torch.Tensor:
    return torch.where(img >= threshold, 255 - img, img)


def _solarize_add(img: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    return torch.where(img < threshold, (img.to(torch.int16) + add).clamp_(0, 255).to(img.dtype), img)


def _posterize(img: torch.Tensor, bits: int) -> torch.Tensor:
    return img if bits >= 8 else F.posterize(img, max(0, bits))


def _affine(img: torch.Tensor, translate=(0.0, 0.0), shear=(0.0, 0.0)) -> torch.Tensor:
    # PIL's affine transforms in timm act about the top-left corner
    return F.affine(img, angle=0.0, translate=list(translate), scale=1.0, shear=list(shear),
                    interpolation=BILINEAR, fill=list(FILL), center=[0.0, 0.0])


# name -> (function(img, magnitude 0..10, rng) ). Level rules follow timm's auto_augment.py.
def _op_table(translate_pct: float = 0.45) -> dict:
    def enhance(fn, increasing):
        def op(img, m, rng):
            factor = 1.0 + _negate(m / 10 * 0.9, rng) if increasing else m / 10 * 1.8 + 0.1
            return fn(img, factor)
        return op

    def shear(axis):
        def op(img, m, rng):
            degrees = math.degrees(math.atan(_negate(m / 10 * 0.3, rng)))
            return _affine(img, shear=(degrees, 0.0) if axis == 0 else (0.0, degrees))
        return op

    def translate(axis):
        def op(img, m, rng):
            pct = _negate(m / 10 * translate_pct, rng)
            size = img.shape[-1] if axis == 0 else img.shape[-2]
            shift = -pct * size
            return _affine(img, translate=(shift, 0.0) if axis == 0 else (0.0, shift))
        return op

    return {
        'AutoContrast': lambda img, m, rng: autocontrast(img),
        'Equalize': lambda img, m, rng: equalize(img),
        'Invert': lambda img, m, rng: F.invert(img),
        'Rotate': lambda img, m, rng: F.rotate(img, _negate(m / 10 * 30.0, rng), interpolation=BILINEAR,
                                               fill=list(FILL)),
        'Posterize': lambda img, m, rng: _posterize(img, int(m / 10 * 4)),
        'PosterizeIncreasing': lambda img, m, rng: _posterize(img, 4 - int(m / 10 * 4)),
        'Solarize': lambda img, m, rng: _solarize(img, int(m / 10 * 256)),
        'SolarizeIncreasing': lambda img, m, rng: _solarize(img, 256 - int(m / 10 * 256)),
        'SolarizeAdd': lambda img, m, rng: _solarize_add(img, int(m / 10 * 110)),
        'Color': enhance(F.adjust_saturation, False),
        'ColorIncreasing': enhance(F.adjust_saturation, True),
        'Contrast': enhance(adjust_contrast, False),
        'ContrastIncreasing': enhance(adjust_contrast, True),
        'Brightness': enhance(F.adjust_brightness, False),
        'BrightnessIncreasing': enhance(F.adjust_brightness, True),
        'Sharpness': enhance(F.adjust_sharpness, False),
        'SharpnessIncreasing': enhance(F.adjust_sharpness, True),
        'ShearX': shear(0),
        'ShearY': shear(1),
        'TranslateXRel': translate(0),
        'TranslateYRel': translate(1),
    }


RAND_OPS = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd', 'Color',
            'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel']
RAND_OPS_INCREASING = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
                       'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
                       'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY', 'TranslateXRel',
                       'TranslateYRel']


class RandAugment:
    """timm's RandAugment applied with one draw to every frame of a clip.

    ``num_ops`` ops are chosen with replacement; each runs with probability ``prob`` at a magnitude drawn
    from N(magnitude, magnitude_std) clipped to [0, magnitude_max] (uniform in [0, magnitude] for an
    infinite std). Differences from timm: bilinear resampling only (timm picks bilinear or bicubic at
    random), tensors instead of PIL images, and the ops that use image statistics (AutoContrast,
    Equalize, Contrast) compute them over the whole clip, so all frames get one mapping. torchvision's own v2.RandAugment also applies one op set to
    a whole (T, 3, H, W) tensor, but has no magnitude noise, per-op probability or 'inc' op set.

    Args:
        num_ops: ops per clip ('n', default 2).
        magnitude: 0..10 ('m').
        magnitude_std: 'mstd' (values above 100 mean infinite).
        magnitude_max: 'mmax' (default 10).
        increasing: 'inc1', the op set whose strength grows with the magnitude.
        prob: probability of each chosen op ('p', default 0.5).
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5,
                 magnitude_max: float = 10, increasing: bool = False, prob: float = 0.5):
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.magnitude_std = float('inf') if magnitude_std > 100 else float(magnitude_std)
        self.magnitude_max = float(magnitude_max)
        self.prob = float(prob)
        self.op_names = list(RAND_OPS_INCREASING if increasing else RAND_OPS)
        self._ops = _op_table()

    def __getstate__(self) -> dict:   # the op table holds closures: rebuild it after pickling (spawn workers)
        return {k: v for k, v in self.__dict__.items() if k != '_ops'}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._ops = _op_table()

    @classmethod
    def from_string(cls, config_str: str) -> 'RandAugment':
        """Parse timm's syntax, e.g. ``rand-m9-mstd0.5-inc1`` or ``rand-m7-n3-mstd1-p0.7``."""
        parts = config_str.split('-')
        if parts[0] != 'rand':
            raise ValueError(f"AUG.AUTO_AUGMENT: expected 'none' or timm's 'rand-m<M>[-n<N>][-mstd<S>]"
                             f"[-mmax<X>][-inc<0|1>][-p<P>]', got {config_str!r}")
        kwargs = {}
        keys = {'m': 'magnitude', 'n': 'num_ops', 'mstd': 'magnitude_std', 'mmax': 'magnitude_max',
                'inc': 'increasing', 'p': 'prob'}
        for part in parts[1:]:
            match = re.fullmatch(r'([a-z]+)(\d[\d.]*)', part)
            if not match or match.group(1) not in keys:
                raise ValueError(f"AUG.AUTO_AUGMENT {config_str!r}: unknown part {part!r} "
                                 f"(known: {sorted(keys)})")
            key, value = keys[match.group(1)], float(match.group(2))
            kwargs[key] = bool(value) if key == 'increasing' else value
        return cls(**kwargs)

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        for name in rng.choice(self.op_names, self.num_ops, replace=True):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            m = self.magnitude
            if self.magnitude_std == float('inf'):
                m = rng.uniform(0, m)
            elif self.magnitude_std > 0:
                m = rng.normal(m, self.magnitude_std)
            m = max(0.0, min(m, self.magnitude_max))
            frames = self._ops[str(name)](frames, m, rng)
        return frames

    def __repr__(self) -> str:
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"magnitude_std={self.magnitude_std}, prob={self.prob}, ops={len(self.op_names)})")


# ---------------------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------------------
def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """Decoder output (N, H, W, 3) uint8 -> (N, 3, H, W) view (channels-last memory, no copy)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


class TrainTransform:
    """The training augmentation of one clip (see the module docstring for the order).

    Args:
        input_size: output side S (DATA.INPUT_SIZE).
        flip_ratio: AUG.FLIP_RATIO.
        color_jitter: AUG.COLOR_JITTER, the probability of jittering a clip.
        color_jitter_per_frame: AUG.COLOR_JITTER_PER_FRAME (the original's independent draw per frame).
        gray_scale: AUG.GRAY_SCALE probability.
        auto_augment: AUG.AUTO_AUGMENT ('none' or '' = off, else timm's 'rand-...' string).
        reprob: AUG.REPROB, random erasing probability (0 = off).
        recount: AUG.RECOUNT, the most boxes per clip.
    """

    def __init__(self, input_size: int = 224, flip_ratio: float = 0.5, color_jitter: float = 0.8,
                 color_jitter_per_frame: bool = False, gray_scale: float = 0.2, auto_augment: str = 'none',
                 reprob: float = 0.0, recount: int = 1):
        self.input_size = int(input_size)
        self.resize_to = train_resize_size(input_size)
        self.flip_ratio = float(flip_ratio)
        self.color_jitter = float(color_jitter)
        self.color_jitter_per_frame = bool(color_jitter_per_frame)
        self.gray_scale = float(gray_scale)
        off = (auto_augment or 'none').lower() in ('none', '')
        self.rand_augment = None if off else RandAugment.from_string(auto_augment)
        self.reprob = float(reprob)
        self.recount = max(1, int(recount))

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> Tuple[torch.Tensor, np.ndarray]:
        """uint8 (T, 3, H, W) -> (uint8 (T, 3, S, S), erase boxes (RECOUNT, 4))."""
        frames = resize_short_side(frames, self.resize_to)
        top, left, h, w = random_resized_crop_box(frames.shape[-2], frames.shape[-1], rng)
        size = [self.input_size, self.input_size]
        frames = F.resized_crop(frames, top, left, h, w, size, interpolation=BILINEAR, antialias=False)
        if rng.random() < self.flip_ratio:
            frames = F.horizontal_flip(frames)
        if self.rand_augment is not None:
            frames = self.rand_augment(frames, rng)
        if rng.random() < self.color_jitter:
            if self.color_jitter_per_frame:
                frames = torch.stack([apply_color_jitter(f, *color_jitter_params(rng)) for f in frames])
            else:
                frames = apply_color_jitter(frames, *color_jitter_params(rng))
        if rng.random() < self.gray_scale:
            frames = F.rgb_to_grayscale(frames, num_output_channels=3)
        boxes = random_erasing_boxes(self.input_size, self.input_size, rng, self.reprob, self.recount)
        return frames.contiguous(), boxes

    def __repr__(self) -> str:
        return (f"TrainTransform(S={self.input_size}, resize={self.resize_to}, flip={self.flip_ratio}, "
                f"jitter={self.color_jitter}{' per frame' if self.color_jitter_per_frame else ''}, "
                f"gray={self.gray_scale}, {self.rand_augment}, reprob={self.reprob})")


class EvalTransform:
    """Test crops of a set of frames: ``num_crop`` 1 (short side 256/224*S, centre) or 3 (short side S).

    Args:
        input_size: crop side S.
        num_crop: 1 or 3 (TEST.NUM_CROP).
    """

    def __init__(self, input_size: int = 224, num_crop: int = 1):
        if num_crop not in (1, 3):
            raise ValueError(f"TEST.NUM_CROP: expected 1 or 3, got {num_crop}")
        self.input_size = int(input_size)
        self.num_crop = int(num_crop)
        self.resize_to = train_resize_size(input_size) if num_crop == 1 else self.input_size

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> (num_crop, N, 3, S, S)."""
        frames = resize_short_side(frames, self.resize_to)
        height, width = frames.shape[-2:]
        if self.num_crop == 1:
            boxes = [center_crop_box(height, width, self.input_size)]
        else:
            boxes = three_crop_boxes(height, width, self.input_size)
        return torch.stack([frames[..., t:t + h, l:l + w] for t, l, h, w in boxes])

    def __repr__(self) -> str:
        return f"EvalTransform(S={self.input_size}, num_crop={self.num_crop}, resize={self.resize_to})"
