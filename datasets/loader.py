"""Datasets and DataLoaders from the config.

Differences from the original (spec 3.6):
* DATA.NUM_WORKERS and DATA.PIN_MEMORY are honoured (the original hard-coded 16 workers and pinning);
  pinning is skipped on machines without CUDA, where it only warns.
* Training: ``DistributedTrainSampler`` (global batches independent of the world size, no padding
  duplicates) wrapped in ``EpochTaggedSampler`` (items are seeded by (SEED, epoch, index)); persistent
  workers; the batch holds BATCH_SIZE x AUG.REPEATED_AUG clips.
* Evaluation: ``DistributedEvalSampler`` (every video on exactly one rank, no padding, no drops) with
  TEST.BATCH_SIZE (the original hard-coded 2 with drop_last, silently skipping videos).
* Workers are seeded through the loader's generator (``seed_worker`` reseeds NumPy/``random`` from it);
  the data pipeline itself never uses global RNGs.
* Workers ignore SIGINT / SIGTERM / SIGUSR1 and end with their parent (``init_worker``): a signal to the
  whole process group (Ctrl-C, systemd, SLURM) no longer kills them before the trainer saves, and the
  workers of a killed trainer do not linger.
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

from utils.workers import exit_with_parent, ignore_stop_signals, kill_workers_at_exit

import torch
from torch.utils.data import DataLoader

from .annotations import describe_root, list_root, read_annotations
from .samplers import DistributedEvalSampler, DistributedTrainSampler, seed_worker
from .sampling import FrameSampler
from .transforms import EvalTransform, TrainTransform
from .video_dataset import EpochTaggedSampler, EvalCollate, TrainCollate, VideoDataset

_logger = logging.getLogger(__name__)

SPLITS = ('train', 'val')


def build_frame_sampler(config: Any) -> FrameSampler:
    return FrameSampler(config.DATA.NUM_FRAMES, config.AUG.FRAME_INTERVAL, mode=config.DATA.SAMPLING,
                        random_test_clips=config.TEST.RANDOM_CLIPS)


def build_train_transform(config: Any) -> TrainTransform:
    aug = config.AUG
    return TrainTransform(
        input_size=config.DATA.INPUT_SIZE, flip_ratio=aug.FLIP_RATIO, color_jitter=aug.COLOR_JITTER,
        color_jitter_per_frame=aug.COLOR_JITTER_PER_FRAME, gray_scale=aug.GRAY_SCALE,
        auto_augment=aug.AUTO_AUGMENT, reprob=aug.REPROB, recount=aug.RECOUNT)


def build_dataset(config: Any, split: str = 'train', num_clip: Optional[int] = None,
                  num_crop: Optional[int] = None, annotation_file: Optional[str] = None) -> VideoDataset:
    """The training ('train', DATA.TRAIN_FILE) or evaluation ('val', DATA.VAL_FILE) dataset.

    Args:
        config: the frozen config.
        split: 'train' or 'val'.
        num_clip, num_crop: evaluation views (default TEST.NUM_CLIP / TEST.NUM_CROP).
        annotation_file: overrides the config's file (e.g. a test split).
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    path = annotation_file or (config.DATA.TRAIN_FILE if split == 'train' else config.DATA.VAL_FILE)
    # a repeated row oversamples a training video (a warning) but would score an evaluation video twice (an error)
    root, origin = list_root(config.DATA.ROOT, path)   # DATA.ROOT '': the root in the list's manifest, if any
    if origin != 'DATA.ROOT':
        _logger.info("%s: DATA.ROOT is '': its videos are read under %s, the root recorded in %s", path, root, origin)
    samples = read_annotations(path, root=root, num_classes=config.DATA.NUM_CLASSES,
                               duplicates='warn' if split == 'train' else 'error')
    common = dict(frame_sampler=build_frame_sampler(config), decoder=config.DATA.DECODER, seed=config.SEED,
                  source=path, looked_under=describe_root(root, origin))
    if split == 'train':
        return VideoDataset(samples, 'train', transform=build_train_transform(config),
                            repeated_aug=config.AUG.REPEATED_AUG,
                            max_unreadable_fraction=config.DATA.MAX_UNREADABLE_FRACTION, **common)
    num_clip = config.TEST.NUM_CLIP if num_clip is None else int(num_clip)
    num_crop = config.TEST.NUM_CROP if num_crop is None else int(num_crop)
    return VideoDataset(samples, 'eval', transform=EvalTransform(config.DATA.INPUT_SIZE, num_crop),
                        num_clip=num_clip, on_unreadable=config.TEST.ON_UNREADABLE, **common)


def recommended_num_workers(usable_cpus: int, local_processes: int) -> int:
    """Loader workers per training process that use this node's CPUs without oversubscribing them.

    Every process (one per GPU) keeps one core for its own loop (collation, host-to-device copies, the
    optimizer on the CPU side); the rest of its share decodes. Decoding is the limit of the train loader
    (DATA.md, "Loader throughput"), so the share should be used in full: fewer workers starve the GPU, more
    only make the workers compete for the same cores."""
    share = max(1, int(usable_cpus)) // max(1, int(local_processes))
    return max(1, share - 1)


def describe_num_workers(config: Any, usable_cpus: int, local_processes: int) -> Tuple[str, bool]:
    """``(log line, is_warning)`` on DATA.NUM_WORKERS against ``recommended_num_workers``."""
    workers = int(config.DATA.NUM_WORKERS)
    recommended = recommended_num_workers(usable_cpus, local_processes)
    line = (f'DATA.NUM_WORKERS {workers} per process; {usable_cpus} usable CPU cores for {local_processes} '
            f'process(es) on this node: recommended {recommended} (cores per process - 1)')
    if workers > usable_cpus // max(1, local_processes):
        return line + ': more workers than cores oversubscribes the CPU, each decodes slower', True
    if workers < recommended:
        return line + ': fewer workers than cores leaves decoding capacity unused (watch "waiting for data")', False
    return line, False


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every loader: seed (``seed_worker``), leave stop signals to the main process (it
    saves at the next step and then shuts the workers down) and die with it."""
    ignore_stop_signals()
    exit_with_parent()
    seed_worker(worker_id)


def _loader_options(config: Any) -> dict:
    workers = int(config.DATA.NUM_WORKERS)
    if workers < 0:
        raise ValueError(f"DATA.NUM_WORKERS: expected >= 0, got {workers}")
    if workers:
        kill_workers_at_exit()  # the workers ignore SIGTERM, which multiprocessing's exit handler relies on
    generator = torch.Generator()
    generator.manual_seed(int(config.SEED))
    return dict(num_workers=workers, pin_memory=bool(config.DATA.PIN_MEMORY) and torch.cuda.is_available(),
                worker_init_fn=init_worker, generator=generator)


def build_train_loader(config: Any, rank: int = 0, world_size: int = 1) -> Tuple[VideoDataset, EpochTaggedSampler,
                                                                                  DataLoader]:
    """``(dataset, sampler, loader)`` for training; call ``sampler.set_epoch(epoch)`` before each epoch.

    Batches: ``imgs`` uint8 (N, T, 3, S, S) with N = DATA.BATCH_SIZE x AUG.REPEATED_AUG, ``label`` and
    ``index`` int64 (N,), ``num_unreadable`` int64 scalar; with AUG.REPROB > 0 also ``erase_boxes``
    (N, AUG.RECOUNT, 4) for ``apply_random_erasing`` after ``normalize_clip``.
    """
    dataset = build_dataset(config, 'train')
    sampler = EpochTaggedSampler(DistributedTrainSampler(
        len(dataset), config.DATA.BATCH_SIZE, rank=rank, world_size=world_size, seed=config.SEED, drop_last=True))
    options = _loader_options(config)
    loader = DataLoader(dataset, batch_size=config.DATA.BATCH_SIZE, sampler=sampler, drop_last=True,
                        collate_fn=TrainCollate(with_erase_boxes=config.AUG.REPROB > 0),
                        persistent_workers=options['num_workers'] > 0, **options)
    _logger.info("train data: %d videos from %s, %d steps per epoch on rank %d/%d, %s, %s", len(dataset),
                 dataset.source, len(loader), rank, world_size, dataset.frame_sampler, dataset.transform)
    return dataset, sampler, loader


def build_eval_loader(config: Any, rank: int = 0, world_size: int = 1, num_clip: Optional[int] = None,
                      num_crop: Optional[int] = None, persistent: bool = False) -> Tuple[VideoDataset, DataLoader]:
    """``(dataset, loader)`` for evaluation with ``num_clip x num_crop`` views (default TEST.*).

    Every video goes to exactly one rank. Batches: ``imgs`` uint8 (B, V, T, 3, S, S), ``label`` and
    ``index`` (B,), ``unreadable`` list of ``(index, path, reason)`` left out of ``imgs``.
    ``persistent``: the workers are started once and serve every pass over the loader (the per-epoch
    validation, twice with EMA) instead of being forked again for each pass; a one-time test leaves it off
    so that its workers end with it.
    """
    dataset = build_dataset(config, 'val', num_clip=num_clip, num_crop=num_crop)
    sampler = DistributedEvalSampler(len(dataset), rank=rank, world_size=world_size)
    size = config.DATA.INPUT_SIZE
    view_shape = (dataset.num_views, config.DATA.NUM_FRAMES, 3, size, size)
    loader = DataLoader(dataset, batch_size=config.TEST.BATCH_SIZE, sampler=sampler, drop_last=False,
                        collate_fn=EvalCollate(view_shape),
                        persistent_workers=persistent and int(config.DATA.NUM_WORKERS) > 0, **_loader_options(config))
    _logger.info("eval data: %d videos from %s (%d on rank %d/%d), %d clips x %d crops", len(dataset),
                 dataset.source, len(sampler), rank, world_size, dataset.num_clip, dataset.transform.num_crop)
    return dataset, loader
