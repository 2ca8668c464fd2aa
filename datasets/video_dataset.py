"""The video dataset: one decode per sample, augmented training views or all test views cut from it.

Training item (``mode='train'``): the video is opened once, ``repeated_aug`` clips are sampled (each
with its own frame indices), the union of their frames is decoded in one call, and every clip gets its
own augmentation. Evaluation item (``mode='eval'``): the ``num_clip`` clips' frames are decoded in one
call and all ``num_crop x num_clip`` views are cut from that decode, crop-major then clip (the
original's order, spec 3.5).

Randomness: every training item draws from ``numpy.random.default_rng([seed, epoch, index])``; the
epoch comes with the index from the sampler (``(epoch, index)`` keys, see ``EpochTaggedSampler``),
so a sample's frames and augmentation do not depend on the worker count, the world size or which
worker (or persistent worker of an earlier epoch) handles it. Evaluation is deterministic; with
TEST.RANDOM_CLIPS its draws use ``default_rng([seed, EVAL_STREAM, index])``.

Unreadable videos (the original crashed the run, spec 3.2; see ``decoders.VideoDecodeError``):

* training: the failure is logged once per video with its reason, a replacement index is drawn from
  the sample's own generator (deterministic), the batch's ``num_unreadable`` counts it. The distinct
  unreadable videos are counted in a table shared by all loader workers of the process; once they
  exceed ``max_unreadable_fraction`` (DATA.MAX_UNREADABLE_FRACTION) of the annotation file, or a
  sample finds no readable replacement in ``MAX_REPLACEMENTS`` draws, ``UnreadableVideosError``
  stops training with a summary. Each rank counts the videos it has drawn; the engine sums the
  batches' ``num_unreadable`` over workers and ranks for its logs.
* evaluation: never substituted. The item is a marker that the collate function lists under
  ``unreadable`` as ``(index, path, reason)`` (policy TEST.ON_UNREADABLE 'skip'), or
  ``UnreadableVideosError`` is raised ('error').
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .decoders import VideoDecodeError, open_video
from .sampling import FrameSampler
from .transforms import EvalTransform, TrainTransform, frames_to_tensor

_logger = logging.getLogger(__name__)

EVAL_STREAM = 0x65766131        # separates evaluation draws from training draws of the same index
MAX_REPLACEMENTS = 10           # consecutive unreadable draws for one sample before giving up
ON_UNREADABLE = ('skip', 'error')


class UnreadableVideosError(RuntimeError):
    """Too many unreadable training videos, or an unreadable video with TEST.ON_UNREADABLE 'error'."""


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training item: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class VideoDataset(Dataset):
    """Videos listed as ``(path, label)``, decoded and transformed into uint8 clips.

    Args:
        samples: ``[(path, label), ...]`` (see ``annotations.read_annotations``).
        mode: 'train' or 'eval'.
        frame_sampler: which frames make a clip.
        transform: ``TrainTransform`` (train) or ``EvalTransform`` (eval).
        decoder: DATA.DECODER backend ('auto', 'decord', 'pyav').
        seed: SEED.
        repeated_aug: AUG.REPEATED_AUG, augmented clips per decoded training video.
        num_clip: clips per video in eval mode (TEST.NUM_CLIP).
        max_unreadable_fraction: DATA.MAX_UNREADABLE_FRACTION (training).
        on_unreadable: TEST.ON_UNREADABLE, 'skip' or 'error' (evaluation).
        source: the annotation file, for messages.
        looked_under: the root the listed paths were joined to (``annotations.describe_root``), added to the
            reason of a video that is not found, so that a wrong or relative DATA.ROOT shows.
    """

    def __init__(self, samples: Sequence[Tuple[str, int]], mode: str, frame_sampler: FrameSampler,
                 transform: Union[TrainTransform, EvalTransform], decoder: str = 'auto', seed: int = 0,
                 repeated_aug: int = 1, num_clip: int = 1, max_unreadable_fraction: float = 0.01,
                 on_unreadable: str = 'skip', source: str = '', looked_under: str = ''):
        if mode not in ('train', 'eval'):
            raise ValueError(f"VideoDataset mode: expected 'train' or 'eval', got {mode!r}")
        if on_unreadable not in ON_UNREADABLE:
            raise ValueError(f"TEST.ON_UNREADABLE: expected one of {list(ON_UNREADABLE)}, got {on_unreadable!r}")
        if repeated_aug < 1 or num_clip < 1:
            raise ValueError(f"AUG.REPEATED_AUG and TEST.NUM_CLIP must be >= 1, got {repeated_aug}, {num_clip}")
        if not 0.0 <= max_unreadable_fraction <= 1.0:
            raise ValueError(f"DATA.MAX_UNREADABLE_FRACTION: expected a fraction in [0, 1], "
                             f"got {max_unreadable_fraction}")
        self.samples: List[Tuple[str, int]] = list(samples)
        self.mode = mode
        self.frame_sampler = frame_sampler
        self.transform = transform
        self.decoder = decoder
        self.seed = int(seed)
        self.repeated_aug = int(repeated_aug)
        self.num_clip = int(num_clip)
        self.max_unreadable_fraction = float(max_unreadable_fraction)
        self.on_unreadable = on_unreadable
        self.source = source
        self.looked_under = looked_under
        self.epoch = 0
        # one flag per video, in shared memory so that all loader workers of this process count together
        self._unreadable = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()
        self._reasons: dict = {}    # this process's first few reasons, for the summary

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for integer keys (the loader passes ``(epoch, index)`` keys instead)."""
        self.epoch = int(epoch)

    @property
    def num_views(self) -> int:
        return self.repeated_aug if self.mode == 'train' else self.num_clip * self.transform.num_crop

    @property
    def num_unreadable(self) -> int:
        """Distinct unreadable videos found so far by this process's workers."""
        return int(self._unreadable.sum())

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        if self.mode == 'train':
            return self._train_item(int(epoch), int(index))
        return self._eval_item(int(index))

    # ----------------------------------------------------------------------------------------------- train
    def _train_item(self, epoch: int, index: int) -> dict:
        rng = sample_rng(self.seed, epoch, index)
        current, failures = index, 0
        while True:
            path, label = self.samples[current]
            try:
                imgs, boxes = self._train_views(path, rng)
                break
            except VideoDecodeError as err:
                failures += 1
                self._record_unreadable(current, err)
                if failures >= MAX_REPLACEMENTS:
                    raise UnreadableVideosError(
                        f"{self.source}: {failures} videos in a row were unreadable while looking for a "
                        f"replacement of sample {index}; last: {err}. {self._advice()}") from None
                # drawn from the sample's own stream only, not skipping videos known to be bad: which
                # videos a worker has seen fail depends on timing and is lost on resume, so skipping them
                # would make the replacement (and an exact resume) depend on it
                current = int(rng.integers(len(self.samples)))
        return dict(imgs=imgs, label=label, index=current, num_unreadable=failures, erase_boxes=boxes)

    def _train_views(self, path: str, rng: np.random.Generator) -> Tuple[torch.Tensor, np.ndarray]:
        with open_video(path, self.decoder) as video:
            clips = np.stack([self.frame_sampler.train(video.num_frames, rng) for _ in range(self.repeated_aug)])
            unique, inverse = np.unique(clips, return_inverse=True)
            frames = video.get_frames(unique)
        inverse = inverse.reshape(clips.shape)
        views, boxes = [], []
        for clip in inverse:
            view, box = self.transform(frames_to_tensor(frames[clip]), rng)
            views.append(view)
            boxes.append(box)
        return torch.stack(views), np.stack(boxes)

    def _record_unreadable(self, index: int, err: VideoDecodeError) -> None:
        first_time = not bool(self._unreadable[index])
        self._unreadable[index] = 1
        if first_time:
            _logger.warning("unreadable video %s (%s); a replacement is drawn", err.path, self._reason(err))
            if len(self._reasons) < 5:
                self._reasons[err.path] = self._reason(err)
        bad = self.num_unreadable
        if bad > self.max_unreadable_fraction * len(self.samples):
            examples = '; '.join(f"{p}: {r}" for p, r in self._reasons.items())
            raise UnreadableVideosError(
                f"{self.source}: {bad} of {len(self.samples)} training videos are unreadable, more than "
                f"DATA.MAX_UNREADABLE_FRACTION = {self.max_unreadable_fraction}. Examples: {examples}. "
                f"{self._advice()}")

    def _reason(self, err: VideoDecodeError) -> str:
        """``err.reason``; for a video not found at a relative path, also the root its listed path was joined to
        (an absolute path says where it was looked for by itself)."""
        if err.reason == 'file not found' and self.looked_under and not os.path.isabs(err.path):
            return f"{err.reason} under {self.looked_under}"
        return err.reason

    def _advice(self) -> str:
        return ("List them all with `python -m datasets.check --cfg <config> --split train`, then fix or "
                "remove them from the annotation file (or raise DATA.MAX_UNREADABLE_FRACTION).")

    # ------------------------------------------------------------------------------------------------ eval
    def _eval_item(self, index: int) -> dict:
        path, label = self.samples[index]
        rng = np.random.default_rng([self.seed, EVAL_STREAM, index]) if self.frame_sampler.random_test_clips else None
        try:
            with open_video(path, self.decoder) as video:
                clips = self.frame_sampler.test(video.num_frames, self.num_clip, rng)    # (K, T)
                unique, inverse = np.unique(clips, return_inverse=True)
                frames = video.get_frames(unique)
        except VideoDecodeError as err:
            if self.on_unreadable == 'error':
                raise UnreadableVideosError(f"unreadable video {err.path} ({self._reason(err)}) and "
                                            f"TEST.ON_UNREADABLE is 'error'") from None
            if not self._unreadable[index]:
                self._unreadable[index] = 1
                _logger.warning("unreadable video %s (%s): left out of the evaluation", err.path,
                                self._reason(err))
            return dict(unreadable=(index, err.path, self._reason(err)), label=label, index=index)
        crops = self.transform(frames_to_tensor(frames))           # (C, U, 3, S, S)
        views = crops[:, torch.from_numpy(inverse.reshape(clips.shape))]  # (C, K, T, 3, S, S)
        return dict(imgs=views.flatten(0, 1), label=label, index=index)


class EpochTaggedSampler(Sampler):
    """Wraps a sampler so that it yields ``(epoch, index)``: the dataset seeds each item with both.

    Passing the epoch with every index (instead of setting it on the dataset) is what keeps persistent
    loader workers, which hold their own copy of the dataset, in step with ``set_epoch``.

    Args:
        sampler: an index sampler with ``set_epoch`` and an ``epoch`` attribute.
    """

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name):   # num_samples, batch_size, ... of the wrapped sampler
        if name == 'sampler':
            raise AttributeError(name)
        return getattr(self.sampler, name)


class TrainCollate:
    """Training items -> batch dict (views of one video are consecutive).

    ``imgs`` uint8 (N, T, 3, S, S) with N = items x repeated_aug, ``label``/``index`` int64 (N,),
    ``num_unreadable`` int64 scalar, and ``erase_boxes`` int64 (N, RECOUNT, 4) when random erasing is on.
    """

    def __init__(self, with_erase_boxes: bool = False):
        self.with_erase_boxes = with_erase_boxes

    def __call__(self, items: List[dict]) -> dict:
        views = [item['imgs'].shape[0] for item in items]
        batch = dict(
            imgs=torch.cat([item['imgs'] for item in items]),
            label=torch.tensor([item['label'] for item, n in zip(items, views) for _ in range(n)], dtype=torch.int64),
            index=torch.tensor([item['index'] for item, n in zip(items, views) for _ in range(n)], dtype=torch.int64),
            num_unreadable=torch.tensor(sum(item['num_unreadable'] for item in items), dtype=torch.int64),
        )
        if self.with_erase_boxes:
            batch['erase_boxes'] = torch.from_numpy(np.concatenate([item['erase_boxes'] for item in items]))
        return batch


class EvalCollate:
    """Evaluation items -> batch dict: ``imgs`` uint8 (B, V, T, 3, S, S) of the readable videos,
    ``label``/``index`` int64 (B,), ``unreadable`` list of ``(index, path, reason)``.

    Args:
        view_shape: (V, T, 3, S, S), the shape of an empty ``imgs`` when no video of a batch is readable.
    """

    def __init__(self, view_shape: Tuple[int, ...]):
        self.view_shape = tuple(view_shape)

    def __call__(self, items: List[dict]) -> dict:
        readable = [item for item in items if 'imgs' in item]
        imgs = (torch.stack([item['imgs'] for item in readable]) if readable
                else torch.zeros((0,) + self.view_shape, dtype=torch.uint8))
        return dict(
            imgs=imgs,
            label=torch.tensor([item['label'] for item in readable], dtype=torch.int64),
            index=torch.tensor([item['index'] for item in readable], dtype=torch.int64),
            unreadable=[item['unreadable'] for item in items if 'unreadable' in item],
        )
