"""Loader throughput per worker: raw decoding vs the full train pipeline vs the 4x3 test pipeline.

    python -m benchmarks.loader [--num-videos 8] [--clips 48] [--backends decord pyav] [--video-dir DIR]

Writes Kinetics-like synthetic videos (340x256, 10 s, 30 fps, H.264 via PyAV; moving textures and
shapes so that the encoder produces ordinary P/B-frames and keyframe intervals) into a temporary
folder (or ``--video-dir``, reused when already there), then measures in this single process with one
torch thread, i.e. what one DataLoader worker delivers (clips per CPU-second of this process, so
that other processes on the machine do not distort the figures):

* raw decode: open the video and decode the 8 sampled frames of a training clip, nothing else;
* train: ``VideoDataset`` in train mode with the published recipe (segment sampling, short side 256,
  RandomResizedCrop 224, flip, colour jitter p 0.8, grayscale p 0.2), uint8 out;
* train + RandAugment + erasing boxes (rand-m9-mstd0.5-inc1, REPROB 0.25);
* raw decode 4 clips: decode the union of the frames of the 4 test clips;
* test 4x3: ``VideoDataset`` in eval mode, 4 clips x 3 crops, uint8 out.

Ratios are taken against the matching raw decode. It also counts how many times each video is
opened and decoded by the 4x3 pipeline (must be 1).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

from datasets import video_dataset
from datasets.decoders import available_backends, open_video, write_video
from datasets.sampling import FrameSampler
from datasets.transforms import EvalTransform, TrainTransform
from datasets.video_dataset import VideoDataset

WIDTH, HEIGHT, SECONDS, FPS = 340, 256, 10, 30


def kinetics_like_frames(seed: int) -> np.ndarray:
    """(300, 256, 340, 3) uint8: a drifting gradient, a scrolling texture and a moving square."""
    rng = np.random.default_rng(seed)
    n = SECONDS * FPS
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    texture = rng.random((HEIGHT * 2, WIDTH * 2, 3), dtype=np.float32) * 60
    colour = rng.uniform(100, 255, 3).astype(np.float32)
    speed = rng.uniform(1, 4, 2)
    frames = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n):
        base = np.stack([(xx + i * speed[0]) % 256, (yy + i * speed[1]) % 256, (xx + yy) / 3 % 256], -1) * 0.6
        oy, ox = (i * 2) % HEIGHT, (i * 3) % WIDTH
        base += texture[oy:oy + HEIGHT, ox:ox + WIDTH]
        cx = int(WIDTH / 2 + WIDTH / 3 * np.sin(i / 20 + seed))
        cy = int(HEIGHT / 2 + HEIGHT / 4 * np.cos(i / 15 + seed))
        base[max(0, cy - 30):cy + 30, max(0, cx - 30):cx + 30] = colour
        frames[i] = base.clip(0, 255)
    return frames


def make_videos(folder: str, count: int) -> list:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f'kinetics_like_{i}.mp4')
        if not os.path.isfile(path):
            write_video(path, kinetics_like_frames(i), fps=FPS, codec='libx264')
        paths.append(path)
    return paths


def interleaved_rates(pipelines: dict, count: int, rounds: int) -> dict:
    """Clips per CPU-second of each pipeline: ``rounds`` rounds, each running every pipeline on
    ``count / rounds`` clips in turn; the median round counts.

    CPU time of this process (``time.process_time``, all its threads) rather than wall time, so that
    other processes competing for the cores do not count: the figure is what one worker with a core
    of its own delivers. Interleaving spreads cache and frequency effects evenly over the pipelines.
    """
    per_round = max(1, count // rounds)
    for fn in pipelines.values():
        fn(0)   # warm-up: first open of a file, lazy imports
    rates = {name: [] for name in pipelines}
    for r in range(rounds):
        for name, fn in pipelines.items():
            start = time.process_time()
            for i in range(r * per_round, (r + 1) * per_round):
                fn(i)
            rates[name].append(per_round / (time.process_time() - start))
    return {name: float(np.median(values)) for name, values in rates.items()}


def measure(paths: list, backend: str, clips: int, rounds: int, num_frames: int, interval: int,
            size: int) -> list:
    sampler = FrameSampler(num_frames, interval, 'segment')
    samples = [(p, 0) for p in paths]
    n = len(paths)
    recipe = TrainTransform(size, flip_ratio=0.5, color_jitter=0.8, gray_scale=0.2)
    heavy = TrainTransform(size, flip_ratio=0.5, color_jitter=0.8, gray_scale=0.2,
                           auto_augment='rand-m9-mstd0.5-inc1', reprob=0.25)
    train = VideoDataset(samples, 'train', sampler, recipe, decoder=backend)
    train_heavy = VideoDataset(samples, 'train', sampler, heavy, decoder=backend)
    test = VideoDataset(samples, 'eval', sampler, EvalTransform(size, num_crop=3), decoder=backend, num_clip=4)

    def raw_train(i):   # exactly the frames the train item of (epoch 0, video i % n) decodes
        rng = video_dataset.sample_rng(0, 0, i % n)
        with open_video(paths[i % n], backend) as video:
            video.get_frames(sampler.train(video.num_frames, rng))

    def raw_test(i):
        with open_video(paths[i % n], backend) as video:
            video.get_frames(np.unique(sampler.test(video.num_frames, 4)))

    rates = interleaved_rates({
        'raw': raw_train,
        'train': lambda i: train[(0, i % n)],
        'heavy': lambda i: train_heavy[(0, i % n)],
        'raw4': raw_test,
        'test': lambda i: test[i % n],
    }, clips, rounds)
    return [
        (backend, f'raw decode ({num_frames} sampled frames)', rates['raw'], None),
        (backend, 'train (decode + augment, uint8)', rates['train'], rates['raw']),
        (backend, 'train + RandAugment + erasing boxes', rates['heavy'], rates['raw']),
        (backend, 'raw decode (4 test clips, union)', rates['raw4'], None),
        (backend, 'test 4x3 (decode + 12 views, uint8)', rates['test'], rates['raw4']),
    ]


def count_decodes(paths: list, backend: str, num_frames: int, interval: int, size: int) -> tuple:
    """(opens per video, get_frames calls per video) of the 4x3 test pipeline."""
    counts = {'open': 0, 'decode': 0}
    original = video_dataset.open_video

    def counting_open(path, backend='auto'):
        reader = original(path, backend)
        counts['open'] += 1
        get_frames = reader.get_frames

        def counted(indices):
            counts['decode'] += 1
            return get_frames(indices)
        reader.get_frames = counted
        return reader

    video_dataset.open_video = counting_open
    try:
        test = VideoDataset([(p, 0) for p in paths], 'eval', FrameSampler(num_frames, interval),
                            EvalTransform(size, num_crop=3), decoder=backend, num_clip=4)
        for i in range(len(test)):
            assert test[i]['imgs'].shape[0] == 12
    finally:
        video_dataset.open_video = original
    return counts['open'] / len(paths), counts['decode'] / len(paths)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--num-videos', type=int, default=8)
    parser.add_argument('--clips', type=int, default=48, help='clips per pipeline and backend')
    parser.add_argument('--rounds', type=int, default=6, help='interleaved rounds (the median is reported)')
    parser.add_argument('--backends', nargs='+', default=available_backends())
    parser.add_argument('--video-dir', help='folder for the synthetic videos (kept; default: a temp folder)')
    parser.add_argument('--num-frames', type=int, default=8)
    parser.add_argument('--interval', type=int, default=4)
    parser.add_argument('--input-size', type=int, default=224)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    folder = args.video_dir or tempfile.mkdtemp(prefix='loader_bench_')
    try:
        start = time.time()
        paths = make_videos(folder, args.num_videos)
        print(f"{len(paths)} synthetic videos {WIDTH}x{HEIGHT}, {SECONDS} s, {FPS} fps, H.264 "
              f"({sum(os.path.getsize(p) for p in paths) / len(paths) / 1e6:.2f} MB each) in {folder} "
              f"[{time.time() - start:.1f} s]")
        print(f"one process, one torch thread (= one DataLoader worker), clips per CPU-second, median of "
              f"{args.rounds} interleaved rounds; {args.num_frames} frames, segment sampling, FRAME_INTERVAL "
              f"{args.interval}, crop {args.input_size}\n")
        print(f"{'backend':8s} {'pipeline (clips/s = videos/s)':40s} {'clips/s':>8s} {'ms/clip':>8s} {'vs raw':>7s}")
        all_rows = []
        for backend in args.backends:
            rows = measure(paths, backend, args.clips, args.rounds, args.num_frames, args.interval,
                           args.input_size)
            all_rows += rows
            for name, what, rate, ref in rows:
                ratio = f"{rate / ref:6.0%}" if ref else ''
                print(f"{name:8s} {what:40s} {rate:8.1f} {1000 / rate:8.1f} {ratio:>7s}")
        opens, decodes = count_decodes(paths, args.backends[0], args.num_frames, args.interval, args.input_size)
        print(f"\n4x3 test pipeline: {opens:.2f} opens and {decodes:.2f} decode calls per video (must be 1)")
        for name, what, rate, ref in all_rows:
            if what.startswith('train (') and ref:
                verdict = 'OK' if rate / ref >= 0.85 else 'BELOW TARGET'
                print(f"{name}: train pipeline keeps {rate / ref:.0%} of raw decode throughput "
                      f"(target >= 85%): {verdict}")
        return 0 if opens == decodes == 1 else 1
    finally:
        if not args.video_dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
