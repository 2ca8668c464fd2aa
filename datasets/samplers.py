"""Distributed samplers for training and evaluation, and a DataLoader worker seeding hook.

Differences from the original (spec 3.6):

* Training used ``torch.utils.data.DistributedSampler``: each rank took every ``world_size``-th index of
  a permutation seeded with ``seed + epoch`` and the dataset was padded with duplicates so that ranks
  got equal counts. The mini-batch a rank saw therefore depended on the world size.
  :class:`DistributedTrainSampler` cuts one permutation per epoch into *global* batches of
  ``batch_size * world_size`` consecutive indices and gives rank ``r`` the ``r``-th slice of each, so the
  union over ranks of step ``g`` is the same set of samples whatever the world size (1 process with
  batch 4 sees exactly what 2 processes with batch 2 see together). The incomplete last global batch
  is dropped (the original's loader had ``drop_last=True`` too), so nothing is duplicated.
* Evaluation used a strided shard with a hard-coded batch size of 2 and ``drop_last=True``, which
  silently skipped up to one video per rank. :class:`DistributedEvalSampler` gives every index to
  exactly one rank (strided, in order), with no padding and no drops; ranks may differ by one sample.
"""
import logging
import random
from typing import Iterator, List

import numpy as np
import torch
from torch.utils.data import Sampler

_logger = logging.getLogger(__name__)

__all__ = ['DistributedTrainSampler', 'DistributedEvalSampler', 'seed_worker', 'epoch_seed']


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch)``.

    Unlike ``seed + epoch`` (what ``DistributedSampler`` uses), different pairs do not collide
    (``(0, 1)`` and ``(1, 0)`` give different streams).
    """
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f'world_size must be >= 1, got {world_size}')
    if not 0 <= rank < world_size:
        raise ValueError(f'rank must be in [0, {world_size}), got {rank}')


class DistributedTrainSampler(Sampler[int]):
    """Per-epoch shuffled sampler whose global batches do not depend on the world size.

    Each epoch draws one permutation of ``range(num_samples)`` from a ``torch.Generator`` seeded with
    ``epoch_seed(seed, epoch)``. Global batch ``g`` is ``perm[g*B*W:(g+1)*B*W]``; this rank yields
    ``perm[g*B*W + r*B : g*B*W + (r+1)*B]`` for every ``g``. Use it with a DataLoader of batch size ``B``.

    Args:
        num_samples: Dataset length.
        batch_size: Samples per rank per step (``DATA.BATCH_SIZE``).
        rank: This process's rank.
        world_size: Number of processes.
        seed: Base seed (``SEED``); the permutation depends on ``(seed, epoch)`` only.
        shuffle: False keeps dataset order (still split into global batches the same way).
        drop_last: True drops the incomplete last global batch. False keeps it: it is split into
            ``world_size`` equal slices, padded by repeating the first indices of the epoch's order
            where it does not divide evenly, so that every rank runs the same number of steps; only
            that last batch then depends on the world size.
    """

    def __init__(
            self,
            num_samples: int,
            batch_size: int,
            rank: int = 0,
            world_size: int = 1,
            seed: int = 0,
            shuffle: bool = True,
            drop_last: bool = True,
    ) -> None:
        _check_rank(rank, world_size)
        if num_samples < 0:
            raise ValueError(f'num_samples must be >= 0, got {num_samples}')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        global_batch = self.batch_size * self.world_size
        self.num_full_batches = self.num_samples // global_batch
        remainder = self.num_samples - self.num_full_batches * global_batch
        # Samples per rank in the incomplete last global batch (0 when it is dropped or absent).
        self._tail_per_rank = 0 if (drop_last or remainder == 0) else -(-remainder // self.world_size)
        if self.num_full_batches == 0 and drop_last and self.num_samples > 0:
            _logger.warning('DistributedTrainSampler: %d samples are fewer than one global batch '
                            '(%d x %d): every epoch is empty', self.num_samples, self.batch_size,
                            self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (call before iterating, every epoch)."""
        self.epoch = int(epoch)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        B, W, r = self.batch_size, self.world_size, self.rank
        indices: List[int] = []
        for g in range(self.num_full_batches):
            start = g * B * W + r * B
            indices.extend(order[start:start + B].tolist())
        if self._tail_per_rank:
            tail = order[self.num_full_batches * B * W:]
            missing = self._tail_per_rank * W - len(tail)
            # Repeat the epoch's order if it is shorter than the padding needed (tiny datasets).
            padding = order.repeat(-(-missing // self.num_samples))[:missing]
            padded = torch.cat([tail, padding])
            indices.extend(padded[r * self._tail_per_rank:(r + 1) * self._tail_per_rank].tolist())
        return iter(indices)

    def __len__(self) -> int:
        return self.num_full_batches * self.batch_size + self._tail_per_rank


class DistributedEvalSampler(Sampler[int]):
    """Strided evaluation shard: rank ``r`` gets indices ``r, r + W, r + 2W, ...`` in order.

    Every index goes to exactly one rank; nothing is padded, duplicated or dropped, so ranks may hold
    different counts (by at most one). Gather per-sample results by the dataset index that each batch
    carries, not by position.

    Args:
        num_samples: Dataset length.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        if num_samples < 0:
            raise ValueError(f'num_samples must be >= 0, got {num_samples}')
        self.num_samples = int(num_samples)
        self.rank = int(rank)
        self.world_size = int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seed ``random`` and NumPy's global RNG from torch's.

    DataLoader gives each worker ``torch.initial_seed() = base_seed + worker_id``, where ``base_seed`` is
    drawn from the loader's generator, but leaves ``random`` and ``numpy.random`` alone: with the
    ``fork`` start method every worker would then inherit the same NumPy state.
    """
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
