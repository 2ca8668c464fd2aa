"""The training DataLoader's clips/s with one worker per CPU core of this machine, the figure the GPU's
training clips/s is divided by (``starve.*`` rows): below 1, a GPU of this machine would wait for data.

The videos are synthetic but Kinetics-shaped in the full run: 340x256, 10 s at 30 fps, H.264 with the
encoder's default keyframe interval, about 0.7 MB like a Kinetics clip (a panning fine texture and a
moving square, so that P/B-frames carry motion). The loader is the one ``main.py`` builds
(``datasets.build_train_loader``) from the Kinetics-400 Video-FocalNet-T config: the published recipe's
sampling and augmentation, ``DATA.NUM_WORKERS`` = the core count, pinned memory where CUDA is available.
The first batch of every worker is left out of the timing (worker start-up and the first file opens).
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from typing import List, Tuple

import numpy as np

from .plan import Settings
from .runner import Channel

KINETICS_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            'configs', 'kinetics400', 'video-focalnet_tiny.yaml')
FPS = 30


def synthetic_frames(seed: int, count: int, height: int, width: int) -> np.ndarray:
    """(count, height, width, 3) uint8: a random texture of 2-pixel cells panning 2 px per frame and a
    moving square."""
    rng = np.random.default_rng(seed)
    cell = 2
    coarse = rng.integers(40, 216, ((height + 2 * count) // cell + 2, (width + 2 * count) // cell + 2, 3),
                          dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, cell, axis=0), cell, axis=1)
    side = max(4, height // 6)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    frames = np.empty((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i] = texture[2 * i:2 * i + height, 2 * i:2 * i + width]
        top = int((height - side) * (0.5 + 0.4 * np.sin(i / 17 + seed)))
        left = int((width - side) * (0.5 + 0.4 * np.cos(i / 23 + seed)))
        frames[i, top:top + side, left:left + side] = colour
    return frames


def _write_one(job: Tuple[str, int, int, int, int]) -> str:
    from datasets.decoders import write_video
    path, seed, count, height, width = job
    write_video(path, synthetic_frames(seed, count, height, width), fps=FPS, codec='libx264')
    return path


LOADER_READ_S = 15.   # seconds of timed batches: enough for a steady rate with every core decoding


def write_videos(folder: str, st: Settings) -> List[str]:
    jobs = [(os.path.join(folder, f'synthetic_{i:02d}.mp4'), i, st.loader_frames, st.loader_height, st.loader_width)
            for i in range(st.loader_videos)]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    if workers == 1 or 'fork' not in multiprocessing.get_all_start_methods():
        return [_write_one(job) for job in jobs]
    with multiprocessing.get_context('fork').Pool(workers) as pool:   # NumPy and PyAV only, no CUDA here
        return pool.map(_write_one, jobs)


def _load_config(opts: List[str]):
    from engine.config import load_config
    return load_config(KINETICS_CFG, opts)


def run(st: Settings, out: Channel, deadline: float, arg: str = '') -> None:
    """The ``loader`` section."""
    from datasets import build_train_loader
    from datasets.decoders import available_backends, resolve_backend

    work = tempfile.mkdtemp(prefix='gpu_check_loader_')
    try:
        start = time.monotonic()
        paths = write_videos(work, st)
        written = time.monotonic() - start
        workers = st.loader_workers
        total = st.loader_batches + workers
        csv = os.path.join(work, 'train.csv')
        with open(csv, 'w') as f:
            for i in range(total * st.loader_batch):
                f.write(f'{paths[i % len(paths)]},{i % 400}\n')
        config = _load_config([
            'DATA.TRAIN_FILE', csv, 'DATA.ROOT', '', 'DATA.NUM_WORKERS', str(workers),
            'DATA.BATCH_SIZE', str(st.loader_batch), 'DATA.NUM_FRAMES', str(st.frames),
            'DATA.INPUT_SIZE', str(st.loader_input), 'DATA.IMG_SIZE', str(st.loader_input),
            'DATA.PIN_MEMORY', 'True'])
        _, sampler, loader = build_train_loader(config)
        sampler.set_epoch(0)
        batches = iter(loader)
        timed_from, counted = None, 0
        cap = max(1., min(LOADER_READ_S, deadline - time.monotonic() - 5))
        for n in range(1, total + 1):
            next(batches)
            if n == workers:
                timed_from = time.monotonic()
            elif timed_from is not None:
                counted += 1
                if time.monotonic() - timed_from > cap:
                    break
        if not counted:
            out.failed('loader.train', f'no batch after the first {workers} (one per worker) within {cap:.0f} s')
            return
        rate = counted * st.loader_batch / (time.monotonic() - timed_from)
        decoder = resolve_backend(config.DATA.DECODER)
        out.ok('loader.train', rate, note=f'decoder {decoder} ({"/".join(available_backends())} installed), '
               f'pinned memory {loader.pin_memory}; {counted * st.loader_batch} clips timed after '
               f'the first {workers} batches; {rate / workers:.1f} clips/s per worker; '
               f'{len(paths)} videos written in {written:.0f} s')
        del batches, loader
    finally:
        shutil.rmtree(work, ignore_errors=True)
