"""Randomness of the training step keyed by the micro-batch, so that the layout of a run does not change the model.

A global batch is cut into micro-batches of ``DATA.BATCH_SIZE`` consecutive clips of the epoch's order (the
training sampler does this cut the same way for any number of processes). Everything the step draws for a
micro-batch (stochastic-depth masks, dropout, the noise of random erasing, the mixup/cutmix choice, ``lam``, box
and pairing) comes from generators seeded by ``(SEED, epoch, global micro-batch index)``. A micro-batch thus
draws the same numbers whether it is the second accumulation step of one process or the first step of a
second process, and ``processes x accumulation steps`` splits of the same global batch train the same model up
to float summation order.

The device draws come from the device's default generator, seeded for the micro-batch inside
``torch.random.fork_rng``: the draws of the model (DropPath, Dropout) need no generator argument, activation
checkpointing replays the masks of the forward pass in its recomputation (it saves and restores the default
generators, which it cannot do for a generator passed explicitly), ``torch.compile`` takes its seeds from the
same generator, and the process's own random state is the same after the step as before it. Mixup draws its few
scalars on the CPU (``datasets/mixup.py``: no device synchronisation) from a NumPy generator reseeded with the
same key.

``TRAIN.LAYOUT_FREE_RANDOMNESS False`` keeps the original's per-process streams (seeded ``SEED + rank``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List

import numpy as np
import torch

# Separates the step's streams from the data pipeline's and the sampler's, which are seeded from SEED too.
STEP_STREAM_TAG = 0x73746570


def micro_batch_index(update: int, micro: int, accumulation_steps: int, rank: int, world_size: int) -> int:
    """Index in the epoch's order of the micro-batch that ``rank`` trains at accumulation step ``micro`` of
    ``update``: the sampler gives each rank, at every step, the ``rank``-th slice of ``world_size``
    consecutive micro-batches."""
    return (update * accumulation_steps + micro) * world_size + rank


def micro_batch_key(seed: int, epoch: int, index: int) -> List[int]:
    """The entropy of micro-batch ``index`` of ``epoch`` (a NumPy ``SeedSequence`` / ``default_rng`` seed)."""
    return [int(seed), STEP_STREAM_TAG, int(epoch), int(index)]


def micro_batch_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit torch seed for micro-batch ``index`` of ``epoch``; distinct keys give unrelated streams."""
    words = np.random.SeedSequence(micro_batch_key(seed, epoch, index)).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & (2 ** 63 - 1)


@contextmanager
def keyed_randomness(seed: int, epoch: int, index: int, device: torch.device) -> Iterator[None]:
    """Inside: the CPU and ``device`` default generators seeded for micro-batch ``index`` of ``epoch``; on exit
    they are back where they were. Wrap the forward and the backward pass (checkpointed recomputation happens
    in the backward)."""
    value = micro_batch_seed(seed, epoch, index)
    on_cuda = device.type == 'cuda'
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if on_cuda else []
    with torch.random.fork_rng(devices=devices, device_type='cuda'):
        torch.default_generator.manual_seed(value)
        if on_cuda:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(value)
        yield
