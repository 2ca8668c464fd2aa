"""Re-encode a folder of videos for training: short side 320, H.264, short keyframe interval, no audio.

Usage::

    python -m datasets.resize SRC DST [--short-side 320] [--gop 16] [--crf 23] [--preset veryfast]
        [--workers N] [--ext .mp4] [--upscale] [--no-progress]

Every video under ``SRC`` (by extension, see ``VIDEO_EXTENSIONS``) is decoded with PyAV and written
under ``DST`` at the same relative path with the extension ``--ext``, using the FFmpeg that ships
inside PyAV (no system ``ffmpeg`` needed). ``SRC`` may also be a single video, ``DST`` then names the
output file.

What is kept and what changes:

* frames: every decoded frame is encoded once with its own timestamp (no frame is dropped or
  duplicated, variable frame rates and timestamps that do not start at 0 pass through); the output's
  packet count is checked against the frames read before the file is published.
* size: the short side becomes ``--short-side`` (aspect ratio kept, both sides rounded to even numbers
  as yuv420p requires); smaller videos keep their size unless ``--upscale``; 0 keeps every size.
* keyframes: one at least every ``--gop`` frames. Sparse training clips (8 frames spread over the whole
  video) decode from the keyframe before each sampled frame, so a short interval makes them several
  times cheaper for a modest growth in file size; DATA.md has the measurements behind the default.
* audio, subtitles and other streams are dropped.

Safe to interrupt and rerun: each video is encoded into a hidden temporary file next to its target
(``.NAME.tmp``, which no ``*.mp4`` pattern matches) and renamed onto the target only once it is
complete, so any file under its final name is whole. A rerun skips the targets that exist and open as
videos. The worker processes of ``--workers N`` end with the main process (``kill -9`` of it included),
instead of finishing their queue and then waiting forever. Videos that cannot be converted (corrupt, truncated, no video stream, ...) are listed with a
one-line reason in ``DST/failed.txt`` (removed again when a later run has no failure); the exit status
is then 1. Bad arguments exit with status 2.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import fractions
import multiprocessing
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from utils.workers import exit_with_parent

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v', '.flv', '.mpg', '.mpeg', '.ts',
                    '.3gp', '.ogv', '.wmv')
# container format per output extension (the temporary file has no video extension, so it is named)
OUTPUT_FORMATS = {'.mp4': 'mp4', '.m4v': 'mp4', '.mov': 'mov', '.mkv': 'matroska'}
FAILED_LIST = 'failed.txt'
DEFAULT_SHORT_SIDE = 320
DEFAULT_GOP = 16
DEFAULT_CRF = 23
DEFAULT_PRESET = 'veryfast'


class ConversionError(RuntimeError):
    """A source video could not be converted; the message is the one-line reason."""


@dataclasses.dataclass(frozen=True)
class EncodeSettings:
    """How ``encode_video`` writes its output.

    Args:
        short_side: target short side in pixels (0: keep the size).
        gop: keyframe interval, i.e. at most this many frames from one keyframe to the next (1: all-intra).
        crf: x264 constant rate factor (lower = better quality, bigger files; 23 is x264's default).
        preset: x264 preset (speed of the encoder vs compression).
        upscale: also enlarge videos whose short side is below ``short_side``.
        threads: encoder and decoder threads per process (1 when several worker processes run).
    """
    short_side: int = DEFAULT_SHORT_SIDE
    gop: int = DEFAULT_GOP
    crf: float = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    upscale: bool = False
    threads: int = 1


def output_size(width: int, height: int, short_side: int, upscale: bool = False) -> Tuple[int, int]:
    """(width, height) with the short side at ``short_side``, aspect ratio kept, both even.

    The long side is rounded to the nearest even number (as ffmpeg's ``scale=-2``). ``short_side`` 0,
    or a smaller video without ``upscale``, keeps the size, an odd side rounded down to even.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"output_size: expected a positive size, got {width}x{height}")
    short = min(width, height)
    if short_side <= 0 or (short <= short_side and not upscale):
        return max(2, width - width % 2), max(2, height - height % 2)
    scale = short_side / short
    if width <= height:
        new_w, new_h = short_side, height * scale
    else:
        new_w, new_h = width * scale, short_side
    return _nearest_even(new_w), _nearest_even(new_h)


def _nearest_even(value: float) -> int:
    return max(2, int(value / 2 + 0.5) * 2)


def _frame_timestamps(frames: Iterator, nominal_step: int) -> Iterator:
    """The decoded frames with a strictly increasing pts each (a missing or repeated one gets the
    previous pts plus one nominal frame duration, so that no frame has to be dropped)."""
    last = None
    for frame in frames:
        pts = frame.pts
        if pts is None or (last is not None and pts <= last):
            pts = 0 if last is None else last + nominal_step
        frame.pts = last = pts
        yield frame


def encode_video(src: str, dst: str, settings: EncodeSettings = EncodeSettings(),
                 container_format: Optional[str] = None) -> Dict[str, object]:
    """Decode ``src`` and write its video stream to ``dst`` (H.264, yuv420p) as ``settings`` say.

    Writes ``dst`` directly (``convert_file`` adds the temporary name and the rename). Returns
    ``{frames, width, height, src_width, src_height}``.

    Raises:
        ConversionError: the source is unreadable (missing, corrupt, truncated, no video stream, fewer
            frames than its header or its packets promise) or the output came out wrong.
    """
    import av
    try:
        source = av.open(src)
    except Exception as e:
        raise ConversionError(f"cannot open ({_one_line(e)})") from None
    try:
        if not source.streams.video:
            raise ConversionError("no video stream in the file")
        in_stream = source.streams.video[0]
        in_stream.codec_context.thread_count = max(1, settings.threads)
        header_frames = int(in_stream.frames or 0)
        src_w, src_h = in_stream.codec_context.width, in_stream.codec_context.height
        if src_w <= 0 or src_h <= 0:
            raise ConversionError(f"the video stream states no frame size ({src_w}x{src_h})")
        width, height = output_size(src_w, src_h, settings.short_side, settings.upscale)
        rate = in_stream.average_rate or in_stream.guessed_rate or fractions.Fraction(25)
        time_base = in_stream.time_base or (1 / fractions.Fraction(rate))
        nominal_step = max(1, int(round(1 / (rate * time_base))))
        packets = [0]

        def decoded_frames():
            for packet in source.demux(in_stream):
                if packet.size:
                    packets[0] += 1
                yield from packet.decode()

        with av.open(dst, 'w', format=container_format) as out:
            out_stream = out.add_stream('libx264', rate=rate)
            out_stream.width, out_stream.height = width, height
            out_stream.pix_fmt = 'yuv420p'
            out_stream.codec_context.time_base = time_base   # the source's clock: timestamps pass through
            out_stream.codec_context.thread_count = max(1, settings.threads)
            out_stream.options = {'crf': str(settings.crf), 'preset': settings.preset, 'g': str(settings.gop)}
            written = 0
            try:
                for frame in _frame_timestamps(decoded_frames(), nominal_step):
                    scaled = frame.reformat(width=width, height=height, format='yuv420p',
                                            interpolation='BICUBIC')
                    scaled.pts, scaled.time_base = frame.pts, time_base
                    for packet in out_stream.encode(scaled):
                        out.mux(packet)
                    written += 1
                for packet in out_stream.encode():
                    out.mux(packet)
            except av.error.FFmpegError as e:
                raise ConversionError(f"failed after {written} frames ({_one_line(e)})") from None
    finally:
        source.close()
    if written == 0:
        raise ConversionError("no decodable video frames")
    if written < packets[0]:
        raise ConversionError(f"only {written} of the {packets[0]} video packets decoded to frames "
                              f"(corrupt data?)")
    if header_frames > written:
        raise ConversionError(f"the header claims {header_frames} frames but only {written} are in the "
                              f"file (truncated?)")
    out_frames = count_video_packets(dst, container_format)
    if out_frames != written:
        raise ConversionError(f"wrote {written} frames but the output holds {out_frames}")
    return dict(frames=written, width=width, height=height, src_width=src_w, src_height=src_h)


def count_video_packets(path: str, container_format: Optional[str] = None) -> int:
    """Video packets (= frames) of ``path`` from demuxing alone (no decoding); 0 if unreadable."""
    import av
    try:
        with av.open(path, format=container_format) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except Exception:
        return 0


def temporary_path(dst: str) -> str:
    """Where ``dst`` is written before it is renamed: hidden, and without a video extension."""
    folder, name = os.path.split(dst)
    return os.path.join(folder, f'.{name}.tmp')


def convert_file(src: str, dst: str, settings: EncodeSettings) -> Tuple[str, str]:
    """Convert one video unless ``dst`` is already done; returns (status, detail).

    status is 'done' (converted), 'skipped' (``dst`` exists and holds video frames) or 'failed'
    (detail = the one-line reason; ``dst`` is left as it was and no temporary file remains).
    """
    if count_video_packets(dst) > 0:
        return 'skipped', ''
    ext = os.path.splitext(dst)[1].lower()
    tmp = temporary_path(dst)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        info = encode_video(src, tmp, settings, container_format=OUTPUT_FORMATS.get(ext, ext.lstrip('.')))
        os.replace(tmp, dst)
    except Exception as e:   # ConversionError, or anything else (disk full, permissions): one line
        _remove_quietly(tmp)
        return 'failed', e.args[0] if isinstance(e, ConversionError) else _one_line(e)
    return 'done', f"{info['frames']} frames {info['src_width']}x{info['src_height']} -> " \
                   f"{info['width']}x{info['height']}"


def find_jobs(src: str, dst: str, ext: str) -> List[Tuple[str, str]]:
    """(source, target) pairs: every video under ``src`` mirrored under ``dst`` with extension ``ext``.

    ``src`` may be a single file (``dst`` is then its target). A ``dst`` inside ``src`` is not scanned.
    Raises ValueError when two sources map onto one target (``a.mkv`` and ``a.webm``).
    """
    if os.path.isfile(src):
        return [(src, dst)]
    dst_abs = os.path.abspath(dst)
    jobs, seen = [], {}
    for folder, subfolders, files in os.walk(src):
        subfolders[:] = sorted(d for d in subfolders if os.path.abspath(os.path.join(folder, d)) != dst_abs)
        for name in sorted(files):
            if name.startswith('.') or os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
                continue
            source = os.path.join(folder, name)
            target = os.path.join(dst, os.path.splitext(os.path.relpath(source, src))[0] + ext)
            if target in seen:
                raise ValueError(f"{seen[target]} and {source} would both be written to {target}; "
                                 f"rename one of them")
            seen[target] = source
            jobs.append((source, target))
    return jobs


def run_jobs(jobs: Sequence[Tuple[str, str]], settings: EncodeSettings, workers: int = 1,
             progress: bool = True) -> List[Tuple[str, str, str]]:
    """``convert_file`` for every job (in ``workers`` processes when > 1); (source, status, detail) each.

    A worker that dies (an encoder or decoder crashing inside native code) does not stop the run: the
    files it had in hand are converted again one at a time, each in a fresh process.
    """
    from utils.progress import ProgressBar
    bar = ProgressBar(len(jobs), desc='resize', enabled=progress, log_lines=True)
    results: Dict[int, Tuple[str, str, str]] = {}
    try:
        if workers <= 1:
            for i, (source, target) in enumerate(jobs):
                results[i] = (source, *convert_file(source, target, settings))
                bar.update()
        else:
            context = multiprocessing.get_context('spawn' if sys.platform == 'darwin' else None)
            crashed = []
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                        initializer=exit_with_parent) as pool:
                futures = {pool.submit(convert_file, s, t, settings): i for i, (s, t) in enumerate(jobs)}
                for future in concurrent.futures.as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = (jobs[i][0], *future.result())
                        bar.update()
                    except concurrent.futures.process.BrokenProcessPool:
                        crashed.append(i)
            for i in sorted(crashed):
                results[i] = (jobs[i][0], *_convert_in_fresh_process(*jobs[i], settings, context))
                bar.update()
    finally:
        bar.close()
    return [results[i] for i in range(len(jobs))]


def _convert_in_fresh_process(source: str, target: str, settings: EncodeSettings, context) -> Tuple[str, str]:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=exit_with_parent) as solo:
        try:
            return solo.submit(convert_file, source, target, settings).result()
        except concurrent.futures.process.BrokenProcessPool:
            _remove_quietly(temporary_path(target))
            return 'failed', 'the decoder or encoder crashed the process'


def write_failed_list(dst_root: str, results: Sequence[Tuple[str, str, str]]) -> Optional[str]:
    """``DST/failed.txt`` with ``source<TAB>reason`` per failure, or remove a stale one; its path or None."""
    path = os.path.join(dst_root, FAILED_LIST)
    failed = [(source, detail) for source, status, detail in results if status == 'failed']
    if not failed:
        _remove_quietly(path)
        return None
    os.makedirs(dst_root, exist_ok=True)
    tmp = temporary_path(path)
    with open(tmp, 'w', encoding='utf-8') as f:
        for source, detail in failed:
            f.write(f"{source}\t{' '.join(detail.split())}\n")
    os.replace(tmp, path)
    return path


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m datasets.resize', description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='folder of videos (searched recursively) or one video')
    parser.add_argument('dst', help='output folder (the tree of SRC is mirrored), or output file')
    parser.add_argument('--short-side', type=int, default=DEFAULT_SHORT_SIDE,
                        help=f'short side in pixels, 0 keeps the size (default {DEFAULT_SHORT_SIDE})')
    parser.add_argument('--upscale', action='store_true', help='also enlarge videos smaller than --short-side')
    parser.add_argument('--gop', type=int, default=DEFAULT_GOP,
                        help=f'keyframe interval in frames, 1 = all-intra (default {DEFAULT_GOP}, see DATA.md)')
    parser.add_argument('--crf', type=float, default=DEFAULT_CRF, help=f'x264 CRF (default {DEFAULT_CRF})')
    parser.add_argument('--preset', default=DEFAULT_PRESET, help=f'x264 preset (default {DEFAULT_PRESET})')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='parallel processes (default: the number of CPUs)')
    parser.add_argument('--threads', type=int, default=1, help='codec threads per process (default 1)')
    parser.add_argument('--ext', default='.mp4', help=f"output extension, one of {sorted(OUTPUT_FORMATS)}")
    parser.add_argument('--no-progress', action='store_true', help='no progress bar on stderr')
    return parser.parse_args(argv)


def _argument_error(args: argparse.Namespace) -> str:
    """The first thing wrong with the arguments, or ''."""
    import av
    if not os.path.exists(args.src):
        return f"SRC {args.src}: no such file or folder"
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        return f"DST {args.dst}: must differ from SRC (sources are never overwritten)"
    if 'libx264' not in av.codecs_available:
        return "the FFmpeg inside PyAV has no libx264 encoder (pip install av brings one)"
    if not args.ext.startswith('.') or args.ext.lower() not in OUTPUT_FORMATS:
        return f"--ext {args.ext}: expected one of {sorted(OUTPUT_FORMATS)}"
    for name in ('gop', 'workers', 'threads'):
        if getattr(args, name) < 1:
            return f"--{name} {getattr(args, name)}: expected an integer >= 1"
    if args.short_side < 0:
        return f"--short-side {args.short_side}: expected >= 0"
    if not 0 <= args.crf <= 51:
        return f"--crf {args.crf}: expected 0..51"
    return ''


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse_args(argv)
    error = _argument_error(args)
    if error:
        print(f"datasets.resize: {error}", file=sys.stderr)
        return 2
    try:
        jobs = find_jobs(args.src, args.dst, args.ext.lower())
    except ValueError as e:
        print(f"datasets.resize: {e}", file=sys.stderr)
        return 2
    if not jobs:
        print(f"datasets.resize: SRC {args.src}: no video files ({', '.join(VIDEO_EXTENSIONS)})", file=sys.stderr)
        return 2
    settings = EncodeSettings(short_side=args.short_side, gop=args.gop, crf=args.crf, preset=args.preset,
                              upscale=args.upscale, threads=args.threads)
    start = time.time()
    results = run_jobs(jobs, settings, workers=min(args.workers, len(jobs)), progress=not args.no_progress)
    counts = {status: sum(1 for _, s, _ in results if s == status) for status in ('done', 'skipped', 'failed')}
    # one video: its failure is printed below; a folder: the list goes to DST/failed.txt
    failed_list = None if os.path.isfile(args.src) else write_failed_list(args.dst, results)
    for source, status, detail in results:
        if status == 'failed':
            print(f"FAILED {source}: {detail}", file=sys.stderr)
    print(f"{counts['done']} converted, {counts['skipped']} already done, {counts['failed']} failed "
          f"in {time.time() - start:.1f} s" + (f"; failures listed in {failed_list}" if failed_list else ''))
    return 4 if counts['failed'] else 0  # unreadable sources (docs/exit-codes.md)


if __name__ == '__main__':
    sys.exit(main())
