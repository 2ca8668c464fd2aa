"""Mixup / CutMix with label smoothing for video batches, applied on the device.

Reproduces the original ``CutmixMixupBlending`` (spec 3.7) and wires the keys it ignored:

* Labels become one-hot targets smoothed by ``AUG.LABEL_SMOOTH`` (off-value ``s/K``, on-value
  ``1 - s + s/K``), as in the original.
* With probability ``AUG.MIXUP_PROB`` the batch is mixed, otherwise its targets are only smoothed.
  The original ignored this key and mixed every batch (its yamls said 0.5, it ran 1.0); the shipped
  configs therefore say 1.0.
* When both are enabled, CutMix is chosen with probability ``AUG.MIXUP_SWITCH_PROB``, otherwise Mixup
  (as in the original). With only one enabled (``AUG.MIXUP`` or ``AUG.CUTMIX`` 0), that one is used.
* Mixup: ``lam ~ Beta(MIXUP, MIXUP)``, ``x = lam * x + (1 - lam) * x[partner]``.
* CutMix: ``lam ~ Beta(CUTMIX, CUTMIX)``; the box has sides ``int(W * sqrt(1 - lam))`` and
  ``int(H * sqrt(1 - lam))``, its centre is uniform over the image, its corners are
  ``centre -/+ side // 2`` clipped to the image (the original's arithmetic), and ``lam`` is recomputed
  from the clipped area, so it is exactly the fraction of pixels kept. ``AUG.CUTMIX_MINMAX`` (was dead)
  = ``(min, max)`` instead draws each side uniformly in ``[min, max)`` of the image side and places the
  box fully inside (timm's rule). The box is the same for every frame of a clip.
* Mixing partner: the original used a random permutation of the batch (timm flips it); we keep the
  random permutation. A sample may be its own partner, which leaves it unchanged, and its target
  consistent.
* ``AUG.MIXUP_MODE`` (was dead): ``'batch'`` = one decision, ``lam`` and box for the whole batch (the
  original); ``'pair'`` = the batch is split into random disjoint pairs that swap content, each pair
  with its own decision, ``lam`` and box (an odd sample out is left unmixed); ``'elem'`` = every sample
  draws its own decision, ``lam`` and box, partner from one random permutation.

Randomness comes from an explicitly seeded NumPy ``Generator`` (a few scalars per batch, drawn on the
CPU); only the pixel mixing runs on the tensor's device, so CPU and GPU runs draw the same numbers and
no device synchronisation is needed. :meth:`Mixup.set_epoch` reseeds from ``(seed, epoch)`` and
:meth:`Mixup.state_dict` captures the generator for mid-epoch resumption (one stream per process, the
original's behaviour); :meth:`Mixup.reseed` instead keys the draws of one micro-batch, so that the
trainer can make them independent of the process and accumulation step it lands on
(``engine/step_random.py``).

The loss for the soft targets is ``timm.loss.SoftTargetCrossEntropy`` (mean over the batch of
``-sum(target * log_softmax(logits))``, identical to the original's).
"""
import logging
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .transforms import host_to_device

_logger = logging.getLogger(__name__)

__all__ = ['Mixup', 'build_mixup', 'smooth_one_hot']

MIXUP_MODES = ('batch', 'pair', 'elem')
# Separates this generator's stream from the data pipeline's, which may also be seeded from SEED.
_STREAM_TAG = 0x6D697875


def _to_device(array: np.ndarray, device: torch.device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``array`` on ``device`` without a CPU-GPU sync (``host_to_device``); the dtype is converted on the CPU."""
    tensor = torch.from_numpy(array)
    return host_to_device(tensor if dtype is None else tensor.to(dtype), device)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0,
                   device: Optional[torch.device] = None) -> torch.Tensor:
    """One-hot float32 targets (B, K) with off-value ``s/K`` and on-value ``1 - s + s/K``."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    labels = labels.to(device=device if device is not None else labels.device, dtype=torch.long)
    targets = torch.full((labels.shape[0], num_classes), off_value, dtype=torch.float32, device=labels.device)
    return targets.scatter_(1, labels.view(-1, 1), on_value)


class Mixup:
    """Mixup / CutMix on float clips ``(B, T, C, H, W)`` (any ``(B, ..., H, W)``) with smoothed targets.

    Args:
        num_classes: Number of classes K (width of the targets).
        mixup_alpha: Beta parameter of Mixup's ``lam``; 0 disables Mixup (``AUG.MIXUP``).
        cutmix_alpha: Beta parameter of CutMix's ``lam``; 0 disables CutMix (``AUG.CUTMIX``).
        cutmix_minmax: Optional ``(min, max)`` fractions of the image side for CutMix box sides; replaces
            the Beta draw (``AUG.CUTMIX_MINMAX``). Only used when CutMix is enabled.
        prob: Probability of mixing a batch / pair / sample (``AUG.MIXUP_PROB``).
        switch_prob: Probability of CutMix when both are enabled (``AUG.MIXUP_SWITCH_PROB``).
        mode: ``'batch'``, ``'pair'`` or ``'elem'`` (``AUG.MIXUP_MODE``).
        label_smoothing: Smoothing of the one-hot targets (``AUG.LABEL_SMOOTH``).
        seed: Seed of the generator (an int or a sequence of ints, as ``numpy.random.default_rng``).
    """

    def __init__(
            self,
            num_classes: int,
            mixup_alpha: float = 0.8,
            cutmix_alpha: float = 1.0,
            cutmix_minmax: Optional[Sequence[float]] = None,
            prob: float = 1.0,
            switch_prob: float = 0.5,
            mode: str = 'batch',
            label_smoothing: float = 0.1,
            seed: Union[int, Sequence[int]] = 0,
    ) -> None:
        if int(num_classes) < 1:
            raise ValueError(f'Mixup: num_classes must be >= 1, got {num_classes}')
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f'Mixup: alphas must be >= 0, got mixup {mixup_alpha}, cutmix {cutmix_alpha}')
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError('Mixup: mixup_alpha and cutmix_alpha are both 0; nothing to do '
                             '(build_mixup returns None in that case)')
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 < cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(f'Mixup: cutmix_minmax must be (min, max) with 0 < min < max <= 1, '
                                 f'got {cutmix_minmax!r}')
            if cutmix_alpha == 0:
                raise ValueError('Mixup: cutmix_minmax is set but cutmix_alpha is 0 (CutMix disabled); '
                                 'set AUG.CUTMIX > 0 to use it')
            cutmix_minmax = (float(cutmix_minmax[0]), float(cutmix_minmax[1]))
        for name, value in (('prob', prob), ('switch_prob', switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'Mixup: {name} must be in [0, 1], got {value}')
        if mode not in MIXUP_MODES:
            raise ValueError(f'Mixup: mode must be one of {list(MIXUP_MODES)}, got {mode!r}')
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f'Mixup: label_smoothing must be in [0, 1), got {label_smoothing}')
        self.num_classes = int(num_classes)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = cutmix_minmax
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.label_smoothing = float(label_smoothing)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ randomness and its state
    def set_epoch(self, epoch: int) -> None:
        """Reseed from ``(seed, epoch)`` so that a run resumed at an epoch boundary draws the same."""
        seed = list(self.seed) if isinstance(self.seed, (list, tuple)) else [int(self.seed)]
        self.rng = np.random.default_rng(seed + [int(epoch)])

    def reseed(self, key: Sequence[int]) -> None:
        """Draw from a generator seeded by ``key`` (e.g. SEED, epoch and micro-batch index) from now on; the
        stream is this class's own, distinct from others seeded with the same key."""
        self.rng = np.random.default_rng([int(k) for k in key] + [_STREAM_TAG])

    def state_dict(self) -> Dict[str, Any]:
        """The generator state (plain Python ints and strings, safe for ``torch.load(weights_only=True)``)."""
        return {'bit_generator': self.rng.bit_generator.state}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.rng.bit_generator.state = state['bit_generator']

    # ------------------------------------------------------------------ draws
    def _use_cutmix(self, size: Optional[int] = None) -> Union[bool, np.ndarray]:
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            return self.rng.random(size) < self.switch_prob
        both = self.cutmix_alpha > 0
        return both if size is None else np.full(size, both)

    def _cutmix_boxes(self, n: int, height: int, width: int) -> np.ndarray:
        """``n`` boxes as int rows ``(y1, y2, x1, x2)`` (exclusive ends)."""
        if self.cutmix_minmax is not None:
            lo, hi = self.cutmix_minmax
            cut_h = self.rng.integers(int(height * lo), max(int(height * hi), int(height * lo) + 1), size=n)
            cut_w = self.rng.integers(int(width * lo), max(int(width * hi), int(width * lo) + 1), size=n)
            y1 = self.rng.integers(0, height - cut_h + 1)
            x1 = self.rng.integers(0, width - cut_w + 1)
            return np.stack([y1, y1 + cut_h, x1, x1 + cut_w], axis=1)
        lam = self.rng.beta(self.cutmix_alpha, self.cutmix_alpha, size=n)
        cut_ratio = np.sqrt(1.0 - lam)
        cut_w = (width * cut_ratio).astype(np.int64)  # int truncation, as the original
        cut_h = (height * cut_ratio).astype(np.int64)
        cx = self.rng.integers(0, width, size=n)
        cy = self.rng.integers(0, height, size=n)
        y1 = np.clip(cy - cut_h // 2, 0, height)
        y2 = np.clip(cy + cut_h // 2, 0, height)
        x1 = np.clip(cx - cut_w // 2, 0, width)
        x2 = np.clip(cx + cut_w // 2, 0, width)
        return np.stack([y1, y2, x1, x2], axis=1)

    @staticmethod
    def _box_lam(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """Fraction of pixels outside each box (kept from the sample itself)."""
        area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
        return 1.0 - area / float(height * width)

    # ------------------------------------------------------------------ mixing
    def __call__(self, imgs: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mix a batch.

        Args:
            imgs: Float clips ``(B, T, C, H, W)`` (normalised), on any device.
            labels: Int class ids ``(B,)`` (or ``(B, 1)``) in ``[0, K)``; checked here for CPU tensors
                (a check on the device would synchronise; the annotation reader checks the range).

        Returns:
            ``(mixed imgs, targets)``: a new tensor (the input is not modified) and float32
            targets ``(B, K)`` on the images' device whose rows sum to 1.
        """
        if not imgs.is_floating_point():
            raise TypeError(f'Mixup expects float clips (normalise first, datasets.normalize_clip), '
                            f'got dtype {imgs.dtype}')
        if imgs.dim() < 3:
            raise ValueError(f'Mixup expects clips (B, ..., H, W), got shape {tuple(imgs.shape)}')
        labels = labels.reshape(-1)
        batch = imgs.shape[0]
        if labels.numel() != batch:
            raise ValueError(f'Mixup: {labels.numel()} labels for a batch of {batch} clips')
        if labels.device.type == 'cpu' and batch and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f'Mixup: labels must be in [0, {self.num_classes}), got '
                             f'{labels.min().item()}..{labels.max().item()}')
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing, device=imgs.device)
        if batch == 0:
            return imgs, targets
        if self.mode == 'batch':
            return self._mix_batch(imgs, targets)
        return self._mix_per_sample(imgs, targets)

    def _mix_batch(self, imgs: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One decision, ``lam`` and box for the whole batch (the original's behaviour)."""
        if self.rng.random() >= self.prob:
            return imgs, targets
        height, width = imgs.shape[-2:]
        perm = _to_device(self.rng.permutation(imgs.shape[0]), imgs.device)
        if self._use_cutmix():
            y1, y2, x1, x2 = (int(v) for v in self._cutmix_boxes(1, height, width)[0])
            lam = 1.0 - (y2 - y1) * (x2 - x1) / float(height * width)
            mixed = imgs.clone()
            mixed[..., y1:y2, x1:x2] = imgs[perm, ..., y1:y2, x1:x2]
        else:
            lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
            # a 0-dim CPU tensor enters a CUDA kernel as a scalar argument: no copy, no sync, the same float32 values
            lam_t = torch.tensor(lam, dtype=torch.float32)
            mixed = lam_t * imgs + (1.0 - lam_t) * imgs[perm]
        lam_t = torch.tensor(lam, dtype=torch.float32)
        return mixed, lam_t * targets + (1.0 - lam_t) * targets[perm]

    def _mix_per_sample(self, imgs: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``'pair'`` / ``'elem'``: per-pair or per-sample decision, ``lam`` and box."""
        batch = imgs.shape[0]
        height, width = imgs.shape[-2:]
        if self.mode == 'pair':
            order = self.rng.permutation(batch)
            num_draws = batch // 2
            first, second = order[0:2 * num_draws:2], order[1:2 * num_draws:2]
            partner = np.arange(batch)  # an odd sample out stays its own partner (unmixed)
            partner[first], partner[second] = second, first
            # Draw index of every sample: both members of a pair share their pair's draws.
            draw_of = np.full(batch, -1)
            draw_of[first] = draw_of[second] = np.arange(num_draws)
        else:
            num_draws = batch
            partner = self.rng.permutation(batch)
            draw_of = np.arange(batch)
        apply = self.rng.random(num_draws) < self.prob
        use_cutmix = self._use_cutmix(num_draws) & apply
        lam = np.ones(num_draws)
        if self.mixup_alpha > 0:
            mix_lam = self.rng.beta(self.mixup_alpha, self.mixup_alpha, size=num_draws)
            lam = np.where(apply & ~use_cutmix, mix_lam, lam)
        boxes = np.zeros((num_draws, 4), dtype=np.int64)
        if self.cutmix_alpha > 0:
            boxes = np.where(use_cutmix[:, None], self._cutmix_boxes(num_draws, height, width), 0)
            lam = np.where(use_cutmix, self._box_lam(boxes, height, width), lam)
        valid = draw_of >= 0
        sample_lam = np.where(valid, lam[np.maximum(draw_of, 0)], 1.0)
        sample_boxes = np.where(valid[:, None], boxes[np.maximum(draw_of, 0)], 0)
        sample_cut = valid & use_cutmix[np.maximum(draw_of, 0)]

        device = imgs.device
        # Weight of the sample itself per pixel: lam (Mixup), 0 inside the box (CutMix), 1 if unmixed.
        lam_t = _to_device(sample_lam, device, torch.float32)
        weight = lam_t.view(batch, 1, 1).expand(batch, height, width)
        if sample_cut.any():
            box_t = _to_device(sample_boxes, device)
            rows = torch.arange(height, device=device)
            cols = torch.arange(width, device=device)
            in_rows = (rows[None] >= box_t[:, 0:1]) & (rows[None] < box_t[:, 1:2])
            in_cols = (cols[None] >= box_t[:, 2:3]) & (cols[None] < box_t[:, 3:4])
            inside = in_rows[:, :, None] & in_cols[:, None, :]
            cut_t = _to_device(sample_cut, device).view(batch, 1, 1)
            weight = torch.where(cut_t, (~inside).float(), weight)
        weight = weight.reshape((batch,) + (1,) * (imgs.dim() - 3) + (height, width)).to(imgs.dtype)
        partner_t = _to_device(partner, device)
        mixed = imgs * weight + imgs[partner_t] * (1 - weight)
        lam_col = lam_t.view(batch, 1).to(targets.device)
        return mixed, lam_col * targets + (1.0 - lam_col) * targets[partner_t.to(targets.device)]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, '
                f'cutmix_alpha={self.cutmix_alpha}, cutmix_minmax={self.cutmix_minmax}, prob={self.prob}, '
                f'switch_prob={self.switch_prob}, mode={self.mode!r}, label_smoothing={self.label_smoothing})')


def build_mixup(config: Any, rank: int = 0) -> Optional[Mixup]:
    """``Mixup`` from ``AUG.*`` or None when ``AUG.MIXUP`` and ``AUG.CUTMIX`` are both 0.

    When None, train with cross-entropy and ``MODEL.LABEL_SMOOTHING``; otherwise with
    ``timm.loss.SoftTargetCrossEntropy``. The generator is seeded from ``(SEED, rank)`` so that ranks mix
    differently; call ``mixup.set_epoch(epoch)`` every epoch for reproducible resumption.
    """
    aug = config.AUG
    if aug.MIXUP == 0 and aug.CUTMIX == 0:
        if aug.CUTMIX_MINMAX is not None:
            _logger.warning('AUG.CUTMIX_MINMAX=%r is ignored: AUG.MIXUP and AUG.CUTMIX are 0', aug.CUTMIX_MINMAX)
        return None
    minmax = aug.CUTMIX_MINMAX
    if minmax is not None:
        try:
            minmax = tuple(float(v) for v in minmax)
        except (TypeError, ValueError):
            raise ValueError(f'AUG.CUTMIX_MINMAX: expected (min, max) fractions, got {minmax!r}') from None
    try:
        return Mixup(
            num_classes=config.MODEL.NUM_CLASSES,
            mixup_alpha=aug.MIXUP,
            cutmix_alpha=aug.CUTMIX,
            cutmix_minmax=minmax,
            prob=aug.MIXUP_PROB,
            switch_prob=aug.MIXUP_SWITCH_PROB,
            mode=aug.MIXUP_MODE,
            label_smoothing=aug.LABEL_SMOOTH,
            seed=[int(config.SEED), int(rank), _STREAM_TAG],
        )
    except ValueError as err:
        raise ValueError(f'AUG.* mixup settings: {err}') from None
