"""Scan an annotation file: unreadable or too-short videos, frame counts, resolutions, frame rates.

Usage::

    python -m datasets.check --cfg configs/kinetics400/video-focalnet_tiny.yaml [--split train|val]
        [--workers 4] [--full] [--write-clean clean.csv] [--opts KEY VALUE ...]

For every video, the decoder of DATA.DECODER opens it and decodes the first frame, the frames of the
single-view test clip and the last frame the header announces (``--full``: every frame, slow). A video
is *unreadable* when that fails (missing, empty, truncated, corrupt, no video stream, zero frames,
fewer frames than the header claims); it is *short* when it has fewer frames than the clip needs
without repeating frames (segment sampling: NUM_FRAMES + FRAME_INTERVAL - 1; dense:
(NUM_FRAMES - 1) x FRAME_INTERVAL + 1): short videos still train and test (indices wrap around as in
the original) but are worth knowing about. A summary of frame counts, resolutions and frame rates
follows. ``--write-clean FILE`` writes the annotation lines of the readable videos (``path,label``,
paths as given in the file). Exit status 4 when any video is unreadable, 0 otherwise.

The listed paths are joined to DATA.ROOT; when it is '' and the list was written by ``datasets.prepare``,
to the root recorded in the ``manifest.json`` beside it (as ``main.py`` does). Videos that are not found
are summed up in one line naming the root they were looked for under (and, for a relative one, the
working directory it is relative to).

Each file is checked in a worker process, so a decoder that crashes hard on one file (a segfault
inside native code) is reported as unreadable instead of stopping the scan.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import multiprocessing
import os
import sys
import time
from typing import List, Optional, Tuple

import numpy as np

from .annotations import describe_root, join_root, list_root, read_annotations
from .decoders import VideoDecodeError, open_video, resolve_backend
from .sampling import FrameSampler


def _container_seconds(path: str) -> float:
    """Duration stated by the container (0.0 when unknown or PyAV is missing)."""
    try:
        import av
        with av.open(path) as container:
            return (container.duration or 0) / 1e6
    except Exception:
        return 0.0


def check_video(path: str, backend: str, sampler: FrameSampler, full: bool = False) -> dict:
    """Open and decode ``path``; returns ``{path, ok, reason, frames, height, width, fps, stated_seconds}``."""
    result = dict(path=path, ok=False, reason='', frames=0, height=0, width=0, fps=0.0, stated_seconds=0.0)
    try:
        with open_video(path, backend) as video:
            result.update(frames=video.num_frames, height=video.height, width=video.width, fps=video.fps)
            n = video.num_frames
            if full:
                for start in range(0, n, 64):
                    video.get_frames(range(start, min(n, start + 64)))
            else:
                video.get_frames(np.unique(np.concatenate([[0, n - 1], sampler.test(n, 1)[0]])))
        result['ok'] = True
        result['stated_seconds'] = _container_seconds(path)
    except VideoDecodeError as err:
        result['reason'] = err.reason
    except Exception as err:  # a bug or an unforeseen decoder failure: report it, keep scanning
        result['reason'] = f"{type(err).__name__}: {err}"
    return result


class _Progress:
    """tqdm when installed, else a one-line ``\\r`` bar on stderr."""

    def __init__(self, total: int, disable: bool = False):
        self.total, self.count, self.start = total, 0, time.time()
        self.disable = disable
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, unit='video', disable=disable, file=sys.stderr)
        except ImportError:
            self._bar = None

    def update(self) -> None:
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
        elif not self.disable:
            width = 30
            done = int(width * self.count / max(1, self.total))
            rate = self.count / max(1e-9, time.time() - self.start)
            sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {self.count}/{self.total} {rate:.1f} video/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.disable:
            sys.stderr.write('\n')


def scan(paths: List[str], backend: str, sampler: FrameSampler, workers: int = 1, full: bool = False,
         progress: bool = True) -> List[dict]:
    """``check_video`` for every path (in ``workers`` processes when > 1), results in input order."""
    results: List[Optional[dict]] = [None] * len(paths)
    bar = _Progress(len(paths), disable=not progress)
    try:
        if workers <= 1:
            for i, path in enumerate(paths):
                results[i] = check_video(path, backend, sampler, full)
                bar.update()
        else:
            _scan_pool(paths, backend, sampler, workers, full, results, bar)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def _scan_pool(paths, backend, sampler, workers, full, results, bar) -> None:
    pending = list(range(len(paths)))
    context = multiprocessing.get_context('spawn' if sys.platform == 'darwin' else None)
    while pending:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(check_video, paths[i], backend, sampler, full): i for i in pending}
            crashed = []
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                    bar.update()
                except concurrent.futures.process.BrokenProcessPool:
                    crashed.append(i)
        if not crashed:
            break
        # a worker died: re-check the affected files one at a time, each in a fresh process
        for i in crashed:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as solo:
                try:
                    results[i] = solo.submit(check_video, paths[i], backend, sampler, full).result()
                except concurrent.futures.process.BrokenProcessPool:
                    results[i] = dict(path=paths[i], ok=False, reason='the decoder crashed the process',
                                      frames=0, height=0, width=0, fps=0.0, stated_seconds=0.0)
            bar.update()
        pending = []


def _summary(values: List[float], unit: str = '') -> str:
    if not values:
        return 'n/a'
    arr = np.asarray(values, dtype=np.float64)
    return (f"min {arr.min():.4g}{unit}, median {np.median(arr):.4g}{unit}, mean {arr.mean():.4g}{unit}, "
            f"max {arr.max():.4g}{unit}")


def _looks_cut(r: dict) -> bool:
    """Far fewer frames than the container's stated duration implies (a cut webm/mkv stays decodable)."""
    return r['fps'] > 0 and r['stated_seconds'] > 0 and r['frames'] + 1 < 0.9 * r['stated_seconds'] * r['fps']


def report(results: List[dict], min_frames: int, out=None) -> Tuple[int, int]:
    """Print the findings (to ``out``, default stdout); returns (unreadable count, short count)."""
    out = out or sys.stdout
    bad = [r for r in results if not r['ok']]
    good = [r for r in results if r['ok']]
    short = [r for r in good if r['frames'] < min_frames]
    cut = [r for r in good if _looks_cut(r)]
    p = lambda *a: print(*a, file=out)   # noqa: E731
    p(f"videos: {len(results)}, readable: {len(good)}, unreadable: {len(bad)}, "
      f"short (< {min_frames} frames, indices will wrap): {len(short)}, possibly cut short: {len(cut)}")
    for r in bad:
        p(f"  UNREADABLE {r['path']}: {r['reason']}")
    for r in short[:50]:
        p(f"  short {r['path']}: {r['frames']} frames")
    if len(short) > 50:
        p(f"  ... and {len(short) - 50} more short videos")
    for r in cut:
        p(f"  possibly cut short {r['path']}: {r['frames']} frames = {r['frames'] / r['fps']:.2f} s, "
          f"the container says {r['stated_seconds']:.2f} s")
    if good:
        p(f"frames: {_summary([r['frames'] for r in good])}")
        p(f"fps: {_summary([r['fps'] for r in good if r['fps'] > 0])}")
        p(f"seconds: {_summary([r['frames'] / r['fps'] for r in good if r['fps'] > 0], ' s')}")
        sizes = collections.Counter(f"{r['width']}x{r['height']}" for r in good)
        shorts = [min(r['width'], r['height']) for r in good]
        p(f"short side: {_summary(shorts, ' px')}")
        top = ', '.join(f"{size} ({count})" for size, count in sizes.most_common(8))
        p(f"resolutions ({len(sizes)} distinct): {top}")
    return len(bad), len(short)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m datasets.check', description=__doc__.split('\n\n')[0])
    parser.add_argument('--cfg', required=True, help='config file (DATA.* and AUG.FRAME_INTERVAL are used)')
    parser.add_argument('--split', choices=('train', 'val'), default='train')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='parallel processes (default: min(8, cores))')
    parser.add_argument('--full', action='store_true', help='decode every frame (slow, finds damage mid-file)')
    parser.add_argument('--write-clean', metavar='FILE', help='write the annotation lines of readable videos')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--opts', nargs='+', default=[], help="config overrides 'KEY VALUE' pairs")
    args = parser.parse_args(argv)

    from engine.config import load_config  # the command line's config loader (the library part needs none)
    from utils.errors import ConfigError
    from .annotations import AnnotationError
    try:
        config = load_config(args.cfg, args.opts)
        annotation_file = config.DATA.TRAIN_FILE if args.split == 'train' else config.DATA.VAL_FILE
        raw = read_annotations(annotation_file, root='', num_classes=config.DATA.NUM_CLASSES)
        root, origin = list_root(config.DATA.ROOT, annotation_file)
        backend = resolve_backend(config.DATA.DECODER)
    except (ConfigError, AnnotationError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sampler = FrameSampler(config.DATA.NUM_FRAMES, config.AUG.FRAME_INTERVAL, config.DATA.SAMPLING)
    paths = [join_root(root, path) for path, _ in raw]
    print(f"checking {len(paths)} videos of {annotation_file} with {backend} "
          f"({'every frame' if args.full else 'first, test-clip and last frames'})"
          + (f", under {root} (the root recorded in {origin}; DATA.ROOT is '')" if origin != 'DATA.ROOT' else ''))
    results = scan(paths, backend, sampler, workers=args.workers, full=args.full, progress=not args.no_progress)
    num_bad, _ = report(results, sampler.min_frames())
    not_found = sum(r['reason'] == 'file not found' for r in results)
    if not_found:   # a wrong DATA.ROOT, or one relative to another working directory, finds no video at all
        print(f"{not_found} of {len(results)} videos not found under {describe_root(root, origin)}: set "
              f"--opts DATA.ROOT to the folder the paths in {annotation_file} are relative to")
    if args.write_clean:
        with open(args.write_clean, 'w') as f:
            for (path, label), r in zip(raw, results):
                if r['ok']:
                    f.write(f"{path},{label}\n")
        print(f"wrote {sum(r['ok'] for r in results)} readable entries to {args.write_clean}")
    return 4 if num_bad else 0  # the exit code of unreadable videos (docs/exit-codes.md)


if __name__ == '__main__':
    sys.exit(main())
