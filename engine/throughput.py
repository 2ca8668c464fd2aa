"""``--throughput``: inference clips/s of the model on random clips (the original had the flag's config key
but no code)."""
from __future__ import annotations

import logging
import time
from typing import Any

import torch

from datasets import normalize_clip
from engine.amp import amp_dtype, autocast

_logger = logging.getLogger(__name__)


@torch.no_grad()
def measure_throughput(config: Any, model: torch.nn.Module, device: torch.device) -> float:
    """``--throughput``: inference clips/s of the model on DATA.BATCH_SIZE clips of the evaluated size
    (DATA.INPUT_SIZE), after warm-up, compiled with TRAIN.COMPILE (the original had the config key but no
    code). Random uint8 clips are normalised on the device."""
    model.eval()
    run = torch.compile(model) if config.TRAIN.COMPILE else model
    batch, size = config.DATA.BATCH_SIZE, config.DATA.INPUT_SIZE
    shape = (batch, config.DATA.NUM_FRAMES, 3, size, size)
    clips = normalize_clip(torch.randint(0, 256, shape, dtype=torch.uint8, device=device))
    dtype = amp_dtype(config, device)
    warmup, iters = (10, 30) if device.type == 'cuda' else (2, 5)
    for i in range(warmup + iters):
        if i == warmup:
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.time()
        with torch.inference_mode(), autocast(device, dtype):
            run(clips)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    throughput = batch * iters / (time.time() - start)
    _logger.info(f'throughput: {throughput:.1f} clips/s ({config.MODEL.NAME}, batch {batch}, '
                f'{config.DATA.NUM_FRAMES} frames of {size}px, AMP {config.TRAIN.AMP}, '
                f'{"compiled, " if config.TRAIN.COMPILE else ""}{device}, after {warmup} warm-up iterations)')
    return throughput
