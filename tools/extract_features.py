"""Clip features over whole videos, for temporal action localization and retrieval.

    python -m tools.extract_features --resume CKPT [--cfg CFG] VIDEO_OR_DIR [...] --out DIR
        [--stride SECONDS] [--window-frames N] [--crop center|full] [--batch N] [--workers N]
        [--device cpu|cuda] [--fp16 | --bf16] [--overwrite] [--opts KEY VALUE ...]
    torchrun --nproc_per_node 4 -m tools.extract_features ...      # the videos shared over 4 processes

A window slides over each whole video (``tools.windows``: window ``k`` centred at ``(k + 0.5) x stride``
seconds, ``--window-frames`` frames wide, default ``NUM_FRAMES x FRAME_INTERVAL``); each window is sampled
as one evaluation clip (the config's test sampler; ``--crop center``: the evaluation's centre crop,
``--crop full``: the whole frame resized) and the model's pooled pre-logits features are kept:
``forward_head(forward_features(clip), pre_logits=True)``, the input of the classifier.

Per video ``DIR/<stem>.npy`` (float32 ``[windows, C]``, C the head's input width) and ``DIR/<stem>.json``
(each window's start/end frame and seconds, the video's frames, fps and duration, and the settings:
checkpoint, config values, stride, window, crop, precision). Both are written atomically, the ``.json``
last, so a video with a ``.json`` is finished: a second run (after a crash or a kill) skips it when the
settings are the same, and refuses to mix settings in one folder unless ``--overwrite``. Windows of a
video are forwarded in batches of ``--batch`` on the device while ``--workers`` processes decode ahead.
A progress line with ETA goes to stderr. Under ``torchrun`` each process takes every WORLD_SIZE-th video
(no communication; each rank uses ``cuda:LOCAL_RANK``). An unreadable video is reported on one line, listed
in ``DIR/unreadable[.rank<r>].txt``, and the others go on; the exit status is then 4 (2 when the only
problem is results of other settings in the way). Bad arguments and a checkpoint that does not fit the config: one line, exit status 2.
An ``--out`` that cannot be written (read-only, under a file) is found before any video is read, and a
disk that fills up while the features are written stops the run; both are one line, exit status 2: the
videos finished until then are kept, the one being written is left out and the same command goes on.

New (the original had no feature extraction).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from tools import _common
from tools import windows as W

_logger = logging.getLogger(__name__)

PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def settings_record(settings: W.WindowSettings, checkpoint: str, precision: str, feature_dim: int) -> dict:
    return dict(settings.as_dict(), checkpoint=os.path.abspath(checkpoint), precision=precision,
                feature_dim=int(feature_dim), features='pre_logits')


def setting_changes(old: dict, new: dict) -> List[str]:
    """``['stride 1 -> 2', ...]``: the settings whose values differ between two records, by name."""
    return [f"{key} {old.get(key, '(none)')} -> {new.get(key, '(none)')}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def finished(out: str, stem: str, record: dict) -> Union[bool, List[str], None]:
    """True: done with these settings; the list of settings that differ (:func:`setting_changes`): done with
    other settings; None: not done."""
    meta_path = os.path.join(out, stem + '.json')
    if not (os.path.isfile(meta_path) and os.path.isfile(os.path.join(out, stem + '.npy'))):
        return None
    try:
        with open(meta_path, 'r', encoding='utf-8') as f:
            old = json.load(f).get('settings')
    except (OSError, ValueError, AttributeError):
        return None   # a damaged record: extract again
    if not isinstance(old, dict):
        return None   # a record without settings: extract again
    return setting_changes(old, record) or True


def write_result(out: str, video: W.VideoWindows, features: np.ndarray, record: dict) -> None:
    """``<stem>.npy`` then ``<stem>.json``, each atomically (the ``.json`` marks the video finished)."""
    from utils.fs import atomic_write, atomic_write_text

    stem = W.output_stem(video.path)
    atomic_write(os.path.join(out, stem + '.npy'), lambda f: np.save(f, features.astype(np.float32)))
    meta = {
        'video': video.path, 'num_frames': int(video.num_frames), 'fps': float(video.fps),
        'duration': round(video.duration, 6), 'windows': int(len(video.starts)),
        'shape': [int(n) for n in features.shape],
        'start_frame': [int(s) for s in video.starts],
        'start': [round(float(t), 6) for t in video.times[:, 0]],
        'end': [round(float(t), 6) for t in video.times[:, 1]],
        'settings': record,
    }
    atomic_write_text(os.path.join(out, stem + '.json'), json.dumps(meta, indent=1) + '\n')


class OutputError(Exception):
    """Writing the results into ``--out`` failed (an ``OSError``: disk full, read-only ...)."""

    def __init__(self, err: OSError):
        super().__init__(str(err))
        self.err = err


def check_output_folder(out: str) -> None:
    """Create ``out`` and write (then remove) a file in it, so that a folder that cannot take the results
    is reported before the model runs; raises the ``OSError``."""
    import tempfile

    os.makedirs(out, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix='.write-check.'):
        pass


def _output_error_line(err: OSError, out: str, finished: Optional[int] = None) -> str:
    """``error: <path>: <reason> (...)``; ``finished``: videos done when a run stops part-way."""
    from utils.os_errors import write_error_reason

    then = '' if finished is None else (f"; {finished} video(s) finished before are kept, run the same command "
                                        f"again to go on")
    return f"error: {err.filename or out}: {write_error_reason(err)} (writing the features to --out {out}{then})"


def shard(paths: Sequence[str], rank: int, world_size: int) -> List[str]:
    return list(paths[rank::world_size])


def _rank_env() -> tuple:
    rank = int(os.environ.get('RANK', '0') or 0)
    world = int(os.environ.get('WORLD_SIZE', '1') or 1)
    local = int(os.environ.get('LOCAL_RANK', '0') or 0)
    return rank, world, local


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m tools.extract_features', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('videos', nargs='+', metavar='VIDEO_OR_DIR', help='video files or folders of videos')
    parser.add_argument('--out', required=True, metavar='DIR', help='output folder for <stem>.npy / <stem>.json')
    W.add_window_arguments(parser)
    parser.add_argument('--batch', type=int, default=16, help='windows per forward pass (default 16)')
    parser.add_argument('--workers', type=int, default=2, help='decoding processes (default 2; 0 = in-process)')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', action='store_const', dest='precision', const='fp16',
                           help='autocast to float16 (features are still saved as float32)')
    precision.add_argument('--bf16', action='store_const', dest='precision', const='bf16', help='autocast to bfloat16')
    parser.set_defaults(precision='fp32')
    parser.add_argument('--overwrite', action='store_true',
                        help='extract again videos finished with other settings (default: refuse)')
    _common.add_model_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    from engine.checkpoint import CheckpointError, load_checkpoint_file
    from engine.config import ConfigError
    from utils.progress import ProgressBar, format_duration

    rank, world, local_rank = _rank_env()
    try:
        if args.batch < 1:
            raise ValueError(f"--batch {args.batch}: expected at least 1")
        device = _common.resolve_device(args.device)
        if device.type == 'cuda':
            device = torch.device('cuda', local_rank)
        if args.precision == 'fp16' and device.type == 'cpu':
            raise ValueError("--fp16 on the CPU: use --bf16 or run on cuda")
        checkpoint = load_checkpoint_file(args.resume)
        config = _common.load_tool_config(args.cfg, checkpoint, args.resume, args.opts)
        settings = W.settings_from_config(config, args.stride, args.window_frames, args.crop)
        model = _common.load_model(config, checkpoint, device)
        del checkpoint
        paths = _common.expand_videos(args.videos)
        if not paths:
            raise ValueError(f"no videos found in {' '.join(args.videos)}")
        W.check_stems(paths)
    except (OSError, ValueError, RuntimeError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        check_output_folder(args.out)
    except OSError as err:   # read-only, no permission, a parent that is a file: nothing was extracted yet
        print(_output_error_line(err, args.out), file=sys.stderr)
        return _common.EXIT_USER_ERROR

    record = settings_record(settings, args.resume, args.precision, model.num_features)
    mine = shard(paths, rank, world)
    todo, skipped, unreadable, conflicts = [], 0, [], 0
    for path in mine:
        state = finished(args.out, W.output_stem(path), record)
        if state is True:
            skipped += 1
        elif state and not args.overwrite:
            conflicts += 1
            unreadable.append((path, f"{W.output_stem(path)}.json in {args.out} was made with other settings: "
                                     f"{', '.join(state)} (pass --overwrite to extract again, or use another --out)"))
        else:
            todo.append(path)
    planned, bad = W.plan_all(todo, settings)
    unreadable += bad
    total = sum(len(v.starts) for v in planned)
    where = f" (rank {rank} of {world})" if world > 1 else ''
    print(f"{len(mine)} videos{where}: {skipped} already done, {len(planned)} to extract ({total} windows, "
          f"stride {settings.stride:g} s, {settings.window_frames} frames per window), {len(unreadable)} that "
          f"cannot be extracted (listed at the end)", flush=True)
    written = []

    def on_video(video, features):
        try:
            write_result(args.out, video, features, record)
        except OSError as err:   # disk full mid-run: raised out of run_windows, which stops the decoding workers
            raise OutputError(err) from err
        written.append(video.path)

    def on_error(video, reason):
        unreadable.append((video.path, reason))

    bar = ProgressBar(total, desc='windows', enabled=rank == 0, log_lines=True)
    try:
        W.run_windows(model, planned, settings, args.batch, args.workers, PRECISIONS[args.precision], True,
                      on_video, on_error, progress=bar)
    except OutputError as failure:
        bar.close()
        print(_output_error_line(failure.err, args.out, skipped + len(written)), file=sys.stderr)
        return _common.EXIT_USER_ERROR
    bar.close()
    for path, reason in unreadable:
        print(f"error: {path}: {reason}", file=sys.stderr)
    listing = os.path.join(args.out, 'unreadable.txt' if world == 1 else f'unreadable.rank{rank}.txt')
    try:
        if unreadable:
            from utils.fs import atomic_write_text
            atomic_write_text(listing, ''.join(f"{p}\t{r}\n" for p, r in unreadable))
        elif os.path.isfile(listing):   # a previous run's list: this run read every video
            os.remove(listing)
    except OSError as err:
        print(_output_error_line(err, args.out, skipped + len(written)), file=sys.stderr)
        return _common.EXIT_USER_ERROR
    print(f"wrote features of {len(written)} videos to {args.out} in {format_duration(time.time() - bar.start)}"
          f" ({model.num_features} values per window)", flush=True)
    if len(unreadable) > conflicts:
        return _common.EXIT_UNREADABLE   # some videos could not be read (the others were extracted)
    return _common.EXIT_USER_ERROR if conflicts else 0   # only results of other settings in the way: a user error


if __name__ == '__main__':
    sys.exit(main())
