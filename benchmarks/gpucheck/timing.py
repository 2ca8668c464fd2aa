"""Timing and peak memory of training and inference steps, interleaved between implementations.

``time_interleaved`` runs every step function ``warmup`` times untimed (cuDNN autotuning with
``cudnn.benchmark``, allocator growth and lazy initialisation happen there), then alternates timed calls
between the functions, one call each per round, until each has ``iters`` calls or the round would pass
``time_cap`` seconds per function (at least two timed calls each). Alternating rounds let clock changes
and neighbours hit every implementation alike. The median per-call time counts.

``peak_memory`` is, on CUDA, ``max_memory_allocated`` during one call minus what was allocated before
it, and the absolute peak. A CPU has no allocator counter: there the figure is the rise of the process's resident-set
high-water mark (``VmHWM`` after clearing it), approximate because freed memory may stay in the heap;
only ``--quick`` measures on the CPU, to run the same code.
"""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
from typing import Callable, Dict, Tuple

import torch

from benchmarks.model import PeakMemory

AMP_DTYPES = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    amp = AMP_DTYPES[dtype]
    return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()


def timed_call(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_interleaved(fns: Dict[str, Callable[[], None]], device: torch.device, warmup: int, iters: int,
                     time_cap: float) -> Dict[str, float]:
    """Median seconds per call of each function in ``fns`` (see the module docstring)."""
    for fn in fns.values():
        for _ in range(warmup):
            timed_call(fn, device)
    times = {name: [] for name in fns}
    spent = {name: 0. for name in fns}
    while True:
        for name, fn in fns.items():
            t = timed_call(fn, device)
            times[name].append(t)
            spent[name] += t
        done = min(len(v) for v in times.values())
        if done >= iters:
            break
        per_call = {name: spent[name] / len(times[name]) for name in fns}
        if done >= 2 and any(spent[n] + per_call[n] > time_cap for n in fns):
            break
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(fn: Callable[[], None], device: torch.device) -> Tuple[int, int]:
    """Bytes of peak memory during one call of ``fn``: ``(over what was allocated before it, absolute)``.
    The first is what the step itself needs; the second, with the weights, optimizer state and batch that
    were there before, is what must fit on the device (the CPU model benchmark's ``PeakMemory``, one rule for
    both benchmarks)."""
    with PeakMemory(device) as memory:
        fn()
    return max(0, memory.peak), memory.absolute


def free_memory(device: torch.device) -> None:
    """After an out-of-memory error: drop what Python still holds and return cached blocks to the driver."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
