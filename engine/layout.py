"""The recipe's global batch on the processes a run has: how many accumulation steps reach it, or why none do.

``TRAIN.GLOBAL_BATCH_SIZE`` is the number of clips per optimizer update that a config's published numbers were
trained with (the released scripts' GPUs x ``DATA.BATCH_SIZE``). When it is set, a run on ``W`` processes with
``B`` clips each takes ``G / (W x B)`` accumulation steps, so that a shipped script on fewer GPUs trains the
published global batch (and, the step's randomness being keyed by the micro-batch, the same model). A layout
that cannot reach ``G`` exactly is refused with the nearest ones that can; ``TRAIN.ACCUMULATION_STEPS`` (or
``--accumulation-steps``) that gives another global batch is refused too, unless the global batch is changed
with it (``TRAIN.GLOBAL_BATCH_SIZE`` to the new total, or 0 to train whatever the flags give).
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple

from utils.errors import ConfigError

_logger = logging.getLogger(__name__)

Layout = Tuple[int, int, int]  # processes, clips per process, accumulation steps


def describe(layout: Layout) -> str:
    processes, clips, steps = layout
    return (f"{processes} process{'es' if processes != 1 else ''} x {clips} clip{'s' if clips != 1 else ''} x "
            f"{steps} accumulation step{'s' if steps != 1 else ''}")


def nearest_layouts(global_batch: int, batch_size: int, world_size: int) -> List[Layout]:
    """Layouts that reach ``global_batch`` exactly, near the one asked for: on ``world_size`` processes the
    closest clips per process at or below ``batch_size`` (the memory a process has) and above it; with
    ``batch_size`` clips the closest process counts below and above ``world_size``."""
    found: List[Layout] = []
    if global_batch % world_size == 0:
        per_process = global_batch // world_size
        clips = [b for b in range(1, per_process + 1) if per_process % b == 0]
        below = [b for b in clips if b <= batch_size]
        above = [b for b in clips if b > batch_size]
        for b in ([max(below)] if below else []) + ([min(above)] if above else []):
            found.append((world_size, b, per_process // b))
    if global_batch % batch_size == 0:
        processes = [w for w in range(1, global_batch // batch_size + 1) if (global_batch // batch_size) % w == 0]
        fewer = [w for w in processes if w < world_size]
        more = [w for w in processes if w > world_size]
        for w in ([max(fewer)] if fewer else []) + ([min(more)] if more else []):
            found.append((w, batch_size, global_batch // (w * batch_size)))
    return list(dict.fromkeys(found))


def accumulation_for(global_batch: int, batch_size: int, world_size: int) -> int:
    """The accumulation steps with which ``world_size`` processes of ``batch_size`` clips reach ``global_batch``.

    Raises:
        ConfigError: one line naming the layout, the global batch and the nearest layouts that reach it.
    """
    per_step = batch_size * world_size
    if global_batch % per_step == 0:
        return global_batch // per_step
    options = nearest_layouts(global_batch, batch_size, world_size)
    hint = ('; layouts that reach it: ' + ', '.join(describe(o) for o in options) + ' (--batch-size sets the '
            'clips per process, GPUS / --nproc_per_node the processes)') if options else ''
    raise ConfigError(f'TRAIN.GLOBAL_BATCH_SIZE {global_batch}: {world_size} process(es) x DATA.BATCH_SIZE '
                      f'{batch_size} = {per_step} clips per micro-step, which no whole number of accumulation '
                      f'steps makes {global_batch}{hint}; or set TRAIN.GLOBAL_BATCH_SIZE 0 to train another '
                      'global batch')


def apply_global_batch(config: Any, world_size: int, logger: Optional[logging.Logger] = None) -> Any:
    """Set ``TRAIN.ACCUMULATION_STEPS`` from ``TRAIN.GLOBAL_BATCH_SIZE`` for ``world_size`` processes and log
    the layout in one line; a config without a global batch is returned unchanged.

    Call before the LR scaling, which then follows the global batch. Raises ``ConfigError`` (one line, exit
    code 2) for a layout that cannot reach the global batch or accumulation steps that contradict it."""
    global_batch = int(config.TRAIN.GLOBAL_BATCH_SIZE)
    if global_batch <= 0:
        return config
    batch_size, asked = int(config.DATA.BATCH_SIZE), int(config.TRAIN.ACCUMULATION_STEPS)
    if asked > 0 and asked * batch_size * world_size != global_batch:
        raise ConfigError(
            f'TRAIN.ACCUMULATION_STEPS (--accumulation-steps) {asked}: {world_size} process(es) x {batch_size} '
            f'clips x {asked} = {asked * batch_size * world_size} clips per update, but the config trains a '
            f'global batch of {global_batch} (TRAIN.GLOBAL_BATCH_SIZE, the recipe of its published numbers) and '
            'derives the accumulation steps from it; leave --accumulation-steps out, or change the global batch '
            f'too (--opts TRAIN.GLOBAL_BATCH_SIZE {asked * batch_size * world_size}, or 0)')
    steps = accumulation_for(global_batch, batch_size, world_size)
    config.defrost()
    config.TRAIN.ACCUMULATION_STEPS = steps
    config.freeze()
    (logger or _logger).info(f'global batch {global_batch} (TRAIN.GLOBAL_BATCH_SIZE): '
                             f'{describe((world_size, batch_size, steps))}')
    return config
