"""Loader throughput per worker, and what short keyframe intervals (``datasets.resize --gop``) buy.

    python -m benchmarks.loader [--num-videos 8] [--clips 24] [--gops 250 32 16 8 1] [--video-dir DIR]
    python -m benchmarks.loader --content noisy  # the earlier benchmark's costlier synthetic content
    python -m benchmarks.loader --originals DIR  # your own videos instead of synthetic ones
    python -m benchmarks.loader --pipelines      # also the per-stage table (raw decode vs train vs test)

Writes Kinetics-like synthetic "originals" (340x256, 10 s, 25 fps, near-lossless H.264; a panning smooth
texture, moving shapes and a little sensor noise, so that the encoder produces ordinary P/B-frames),
then re-encodes each one per keyframe interval with ``datasets.resize.encode_video`` (what
``python -m datasets.resize --short-side 0 --gop G`` writes: x264 veryfast, CRF 23, same size). GOP 250
is x264's default keyframe interval, i.e. what an ordinary ``ffmpeg -c:v libx264`` re-encode (and the
files of the earlier DATA.md recipe) hold. Files go to a temporary folder, or to ``--video-dir`` (kept
and reused).

Keyframe-interval table, all in ONE interleaved measurement (every pipeline runs a few clips in turn,
round after round; the median round counts), so that the ratios hold on a loaded machine:

* keyframes per video, mean size of a keyframe and of another frame, MB per video, PSNR against the
  original (first two videos, every 10th frame: at one CRF, more keyframes also mean higher quality);
* train: ``VideoDataset`` in train mode with the published recipe (segment sampling of 8 frames,
  short side 256, RandomResizedCrop 224, flip, colour jitter, grayscale), uint8 out, per backend;
* test 4x3: ``VideoDataset`` in eval mode, 4 clips x 3 crops, uint8 out (videos/s), per backend;

each also as a ratio to GOP 250. One process with one torch thread = one DataLoader worker; rates are
clips per CPU-second of this process (``time.process_time``), so that other processes on the machine
inflate wall time but not the figures (shared caches and memory bandwidth still do: compare ratios).

``--pipelines`` adds the earlier per-stage table on the GOP 250 files: raw decode of the 8 sampled
frames, train, train + RandAugment + erasing boxes, raw decode of the 4 test clips, test 4x3 (ratios to
the matching raw decode), and counts how many times the 4x3 pipeline opens and decodes each video
(must be 1).
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
from datasets.resize import EncodeSettings, encode_video, find_jobs
from datasets.sampling import FrameSampler
from datasets.transforms import EvalTransform, TrainTransform
from datasets.video_dataset import VideoDataset

WIDTH, HEIGHT, SECONDS, FPS = 340, 256, 10, 25
SOURCE_GOP = 250   # x264's default keyframe interval: what ordinary H.264 files hold


def _box_blur(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean over a window of ``k`` along ``axis`` (shrinking at the borders), via a cumulative sum."""
    n = a.shape[axis]
    c = np.cumsum(a, axis=axis, dtype=np.float32)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis)), c], axis)
    lo = np.clip(np.arange(n) - k // 2, 0, n)
    hi = np.clip(np.arange(n) + k - k // 2, 0, n)
    shape = [1] * a.ndim
    shape[axis] = n
    return (np.take(c, hi, axis) - np.take(c, lo, axis)) / (hi - lo).reshape(shape)


def smooth_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 in 0..255: random noise at three coarse scales, upsampled and blurred
    (blobs and soft edges like a natural scene rather than per-pixel noise)."""
    out = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((32, 0.5), (8, 0.3), (2, 0.2)):
        coarse = rng.random((height // cell + 2, width // cell + 2, 3), dtype=np.float32)
        up = np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:height, :width]
        out += weight * 255 * _box_blur(_box_blur(up, cell, 0), cell, 1)
    return out


def smooth_scene_frames(seed: int) -> np.ndarray:
    """(250, 256, 340, 3) uint8: a camera panning over a smooth scene, a moving object, sensor noise."""
    rng = np.random.default_rng(seed)
    n = SECONDS * FPS
    scene = smooth_texture(rng, HEIGHT * 2, WIDTH * 2)
    colour = rng.uniform(60, 255, 3).astype(np.float32)
    speed = rng.uniform(0.5, 2.5, 2)
    frames = np.empty((n, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(n):
        oy = int(HEIGHT / 2 + HEIGHT / 2 * np.sin(i * speed[0] / 60))
        ox = int(WIDTH / 2 + WIDTH / 2 * np.sin(i * speed[1] / 60 + seed))
        frame = scene[oy:oy + HEIGHT, ox:ox + WIDTH].copy()
        cx = int(WIDTH / 2 + WIDTH / 3 * np.sin(i / 20 + seed))
        cy = int(HEIGHT / 2 + HEIGHT / 4 * np.cos(i / 15 + seed))
        frame[max(0, cy - 30):cy + 30, max(0, cx - 30):cx + 30] = colour
        frame += rng.normal(0, 2.0, (HEIGHT, WIDTH, 1)).astype(np.float32)   # grain
        frames[i] = frame.clip(0, 255)
    return frames


def noisy_texture_frames(seed: int) -> np.ndarray:
    """(250, 256, 340, 3) uint8, the earlier benchmark's content: drifting wrapped gradients, a scrolling
    per-pixel noise texture (jumping back when it wraps) and a moving square. Much costlier per P-frame
    to store and decode than the smooth scene: the two bracket real footage."""
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


CONTENTS = {'smooth': smooth_scene_frames, 'noisy': noisy_texture_frames}


def make_videos(folder: str, count: int, gops: list, originals: str = '', content: str = 'smooth') -> dict:
    """{gop: [paths]}: originals re-encoded by ``datasets.resize`` at each interval, same size.

    The originals are near-lossless synthetic videos of ``content``, or the first ``count`` videos of
    the folder ``originals`` (your own data: the size and speed ratios depend on the content).
    Returns ``{'originals': [...], gop: [...], ...}``."""
    os.makedirs(folder, exist_ok=True)
    if originals:
        jobs = find_jobs(originals, folder, '.mp4')[:count]
        if not jobs:
            raise SystemExit(f"--originals {originals}: no video files found")
        sources, prefix = [source for source, _ in jobs], 'own_'
    else:
        prefix = f'{content}_'
        sources = [os.path.join(folder, f'{prefix}original_{i}.mp4') for i in range(count)]
        for i, path in enumerate(sources):
            if not os.path.isfile(path):
                write_video(path, CONTENTS[content](i), fps=FPS, options={'crf': 10, 'preset': 'ultrafast'})
    variants = {gop: [] for gop in gops}
    for i, source in enumerate(sources):
        for gop in gops:
            path = os.path.join(folder, f'{prefix}gop{gop}_{i}.mp4')
            if not os.path.isfile(path):
                encode_video(source, path, EncodeSettings(short_side=0, gop=gop))
            variants[gop].append(path)
    return sources, variants


def psnr(originals: list, encoded: list, step: int = 10) -> float:
    """Mean PSNR (dB, RGB) of ``encoded`` against ``originals`` over every ``step``-th frame."""
    errors = []
    for a, b in zip(originals, encoded):
        with open_video(a, 'pyav') as ref, open_video(b, 'pyav') as out:
            idx = range(0, min(ref.num_frames, out.num_frames), step)
            errors.append(((ref.get_frames(idx).astype(np.float32) - out.get_frames(idx)) ** 2).mean())
    return float(10 * np.log10(255 ** 2 / np.mean(errors)))


def frame_sizes(paths: list) -> tuple:
    """(keyframes per video, mean keyframe KB, mean other frame KB) from the packets."""
    import av
    key, other = [], []
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size:
                    (key if packet.is_keyframe else other).append(packet.size)
    return len(key) / len(paths), np.mean(key) / 1e3, (np.mean(other) / 1e3 if other else 0.0)


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


def measure_gops(variants: dict, backends: list, clips: int, rounds: int, num_frames: int, interval: int,
                 size: int) -> dict:
    """{(gop, backend, 'train' | 'test'): clips (videos) per CPU-second}, all in one interleaved run."""
    sampler = FrameSampler(num_frames, interval, 'segment')
    recipe = TrainTransform(size, flip_ratio=0.5, color_jitter=0.8, gray_scale=0.2)
    pipelines = {}
    for gop, paths in variants.items():
        samples, n = [(p, 0) for p in paths], len(paths)
        for backend in backends:
            train = VideoDataset(samples, 'train', sampler, recipe, decoder=backend)
            test = VideoDataset(samples, 'eval', sampler, EvalTransform(size, num_crop=3), decoder=backend,
                                num_clip=4)
            pipelines[(gop, backend, 'train')] = lambda i, d=train, n=n: d[(0, i % n)]
            pipelines[(gop, backend, 'test')] = lambda i, d=test, n=n: d[i % n]
    return interleaved_rates(pipelines, clips, rounds)


def print_gop_table(originals: list, variants: dict, rates: dict, backends: list) -> None:
    base = SOURCE_GOP if SOURCE_GOP in variants else max(variants)
    mb = {g: sum(os.path.getsize(p) for p in ps) / len(ps) / 1e6 for g, ps in variants.items()}
    keys = [(b, m) for m in ('train', 'test') for b in backends]
    head = ['keyframe interval', 'keyframes/video', 'KB/keyframe', 'KB/other frame', 'MB/video', f'size vs {base}',
            'PSNR dB']
    head += [f"{b} {'train clips/s' if m == 'train' else 'test 4x3 videos/s'}" for b, m in keys]
    head += [f"{b} {m} vs {base}" for b, m in keys]
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for gop in sorted(variants, reverse=True):
        name = 'all-intra (1)' if gop == 1 else f'{gop}{" (source)" if gop == base else ""}'
        keyframes, key_kb, other_kb = frame_sizes(variants[gop])
        cells = [name, f'{keyframes:.0f}', f'{key_kb:.1f}', f'{other_kb:.2f}', f'{mb[gop]:.3f}', f'{mb[gop] / mb[base]:.2f}x',
                 f'{psnr(originals[:2], variants[gop][:2]):.2f}']
        cells += [f'{rates[(gop, b, m)]:.1f}' for b, m in keys]
        cells += [f'{rates[(gop, b, m)] / rates[(base, b, m)]:.2f}x' for b, m in keys]
        print('| ' + ' | '.join(cells) + ' |')
    print(f"\ngoal: train clips/s >= 2x GOP {base} on every backend at <= 1.5x its size")
    for gop in sorted(variants, reverse=True):
        if gop == base:
            continue
        speed = min(rates[(gop, b, 'train')] / rates[(base, b, 'train')] for b in backends)
        grow = mb[gop] / mb[base]
        verdict = 'meets the goal' if speed >= 2 and grow <= 1.5 else 'misses the goal'
        print(f"  GOP {gop:>3}: train >= {speed:.2f}x, size {grow:.2f}x -> {verdict}")


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
    parser.add_argument('--clips', type=int, default=24, help='clips per pipeline (keyframe-interval table)')
    parser.add_argument('--rounds', type=int, default=4, help='interleaved rounds (the median is reported)')
    parser.add_argument('--gops', type=int, nargs='+', default=[SOURCE_GOP, 32, 16, 8, 1],
                        help=f'keyframe intervals to compare (ratios are to {SOURCE_GOP})')
    parser.add_argument('--backends', nargs='+', default=available_backends())
    parser.add_argument('--pipelines', action='store_true',
                        help='also the per-stage table (raw decode, train, RandAugment, test) on the source GOP')
    parser.add_argument('--pipeline-clips', type=int, default=48, help='clips per pipeline (per-stage table)')
    parser.add_argument('--content', choices=sorted(CONTENTS), default='smooth',
                        help='synthetic content: smooth (panning scene) or noisy (the earlier benchmark\'s)')
    parser.add_argument('--originals', default='', help='a folder of your own videos to use instead of '
                        'the synthetic ones (the first --num-videos; re-encoded at their size)')
    parser.add_argument('--video-dir', help='folder for the synthetic videos (kept; default: a temp folder)')
    parser.add_argument('--num-frames', type=int, default=8)
    parser.add_argument('--interval', type=int, default=4)
    parser.add_argument('--input-size', type=int, default=224)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    gops = sorted(set(args.gops) | {SOURCE_GOP}, reverse=True)
    folder = args.video_dir or tempfile.mkdtemp(prefix='loader_bench_')
    try:
        start = time.time()
        print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        originals, variants = make_videos(folder, args.num_videos, gops, args.originals, args.content)
        what = (f"videos from {args.originals}" if args.originals else
                f"synthetic videos ({args.content} content) {WIDTH}x{HEIGHT}, {SECONDS} s, {FPS} fps")
        print(f"{len(variants[SOURCE_GOP])} {what}, re-encoded by "
              f"datasets.resize (libx264 veryfast CRF 23) at keyframe intervals {gops} in {folder} "
              f"[{time.time() - start:.1f} s]")
        print(f"one process, one torch thread (= one DataLoader worker), clips per CPU-second, median of "
              f"{args.rounds} interleaved rounds of {args.clips // args.rounds} clips; {args.num_frames} frames, "
              f"segment sampling, FRAME_INTERVAL {args.interval}, crop {args.input_size}\n")
        start = time.time()
        rates = measure_gops(variants, args.backends, args.clips, args.rounds, args.num_frames, args.interval,
                             args.input_size)
        print_gop_table(originals, variants, rates, args.backends)
        print(f"[measured in {time.time() - start:.1f} s; load average now "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}]")
        if not args.pipelines:
            return 0
        paths = variants[SOURCE_GOP]
        print(f"\nper stage, GOP {SOURCE_GOP} files:\n")
        print(f"{'backend':8s} {'pipeline (clips/s = videos/s)':40s} {'clips/s':>8s} {'ms/clip':>8s} {'vs raw':>7s}")
        for backend in args.backends:
            for name, what, rate, ref in measure(paths, backend, args.pipeline_clips, 6, args.num_frames,
                                                 args.interval, args.input_size):
                ratio = f"{rate / ref:6.0%}" if ref else ''
                print(f"{name:8s} {what:40s} {rate:8.1f} {1000 / rate:8.1f} {ratio:>7s}")
        opens, decodes = count_decodes(paths, args.backends[0], args.num_frames, args.interval, args.input_size)
        print(f"\n4x3 test pipeline: {opens:.2f} opens and {decodes:.2f} decode calls per video (must be 1)")
        return 0 if opens == decodes == 1 else 1
    finally:
        if not args.video_dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
