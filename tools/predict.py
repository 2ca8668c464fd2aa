"""Classify your own videos with a trained Video-FocalNet.

    python -m tools.predict --cfg CFG --resume CKPT VIDEO [VIDEO ...] [--topk 5] [--views 4x3]
                            [--json OUT] [--device cpu|cuda] [--opts KEY VALUE ...]

Folders expand to the video files inside them. Every video is decoded, sampled and cropped exactly as in
evaluation (``datasets``' evaluation pipeline, ``CLIPSxCROPS`` views, default
``TEST.FINAL_NUM_CLIP x TEST.FINAL_NUM_CROP``: the published 4x3 protocol) and scored as in evaluation
(``engine.evaluator``: softmax summed over views, or mean logits with ``TEST.SCORE_AGG logits``); the
printed probabilities are the view-averaged ones. Class names come from ``DATA.LABEL_LIST``, or when that
file is absent from the names the checkpoint carries (training checkpoints and ``tools.publish`` files store them).

With ``--timeline`` each whole video is scored window by window instead (``tools.windows``, the same
windows as ``tools.extract_features``: one evaluation clip per window, centred every ``--stride`` seconds):
the top-k per window is printed and written to ``DIR/<stem>.csv`` (``start_s,end_s,rank,class_id,name,
probability``), and ``DIR/<stem>.png`` draws the classes that reach the highest probabilities as strips
over time (``--timeline-dir DIR``, default ``timelines``)::

    python -m tools.predict --resume CKPT VIDEO --timeline [--stride 1] [--timeline-classes 5]

``--annotate OUT.mp4`` (with ``--timeline``, one video) also writes the video with the current window's top
classes and probabilities drawn on each frame (``tools.annotate``).

Videos that cannot be read are reported on one line each and the others are still predicted; the exit
code is then 4. A checkpoint that does not fit the config stops with one error listing the keys (exit 2;
docs/exit-codes.md).
The original code had no prediction tool.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from tools import _common


def predict(model: torch.nn.Module, config, paths: Sequence[str], num_clip: int, num_crop: int, topk: int = 5,
            workers: int = 0, max_clips_per_forward: int = 16, names: Optional[Sequence[str]] = None) -> tuple:
    """Top-k classes of each readable video.

    Args:
        model: the model in eval mode (on its device).
        config: the config it was built from.
        paths: video files.
        num_clip, num_crop: views per video.
        topk: classes to return per video.
        workers: DataLoader worker processes decoding videos.
        max_clips_per_forward: views forwarded together.
        names: class names by id (default :func:`tools._common.class_names` of ``config``).

    Returns:
        (predictions, unreadable): predictions = list of ``{'video', 'top': [{'class_id', 'name',
        'probability'}, ...]}`` in the order of ``paths`` (unreadable ones left out); unreadable = list of
        ``{'video', 'reason'}``.
    """
    from torch.utils.data import DataLoader

    from datasets import normalize_clip
    from datasets.video_dataset import EvalCollate
    from engine.evaluator import evaluate, topk_predictions

    names = list(names) if names is not None else _common.class_names(config)
    dataset = _common.eval_dataset(config, paths, num_clip, num_crop)
    size = config.DATA.INPUT_SIZE
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                        collate_fn=EvalCollate((dataset.num_views, config.DATA.NUM_FRAMES, 3, size, size)))
    device = next(model.parameters()).device
    meter = evaluate(model, loader, config.MODEL.NUM_CLASSES, dataset.num_views, device=device,
                     normalize=normalize_clip, score_agg=config.TEST.SCORE_AGG,
                     max_clips_per_forward=max_clips_per_forward, num_videos=len(dataset), show_progress=False)
    indices, scores, _ = meter.arrays()
    probs = torch.from_numpy(scores)
    if config.TEST.SCORE_AGG == 'logits':  # mean logits -> probabilities for display
        probs = probs.softmax(-1)
    top = topk_predictions(probs.numpy(), topk)
    predictions = [{'video': paths[index],
                    'top': [{'class_id': int(c), 'name': names[c], 'probability': round(float(probs[row, c]), 6)}
                            for c in top[row]]}
                   for row, index in enumerate(indices)]
    unreadable = [{'video': path, 'reason': reason} for _, (path, reason) in sorted(meter.unreadable.items())]
    return predictions, unreadable


def timeline(model: torch.nn.Module, config, paths: Sequence[str], settings, batch: int = 16,
             workers: int = 0) -> tuple:
    """Class probabilities of every window of each readable video.

    Returns:
        (timelines, unreadable): timelines = list of ``{'video', 'duration', 'times' (W, 2) seconds,
        'probs' (W, num_classes)}`` in the order of ``paths``; unreadable = list of ``{'video', 'reason'}``.
    """
    from tools import windows as W

    planned, bad = W.plan_all(paths, settings)
    unreadable = [{'video': p, 'reason': r} for p, r in bad]
    results = {}

    def on_video(video, logits):
        probs = torch.from_numpy(logits).softmax(-1).numpy()
        results[video.path] = {'video': video.path, 'duration': video.duration, 'times': video.times, 'probs': probs}

    def on_error(video, reason):
        unreadable.append({'video': video.path, 'reason': reason})

    W.run_windows(model, planned, settings, batch, workers, None, False, on_video, on_error)
    return [results[p] for p in paths if p in results], unreadable


def timeline_rows(result: dict, names: Sequence[str], topk: int) -> list:
    """``[(start, end, rank, class_id, name, probability), ...]``: the top-k of each window."""
    from engine.evaluator import topk_predictions

    top = topk_predictions(result['probs'], topk)
    return [(round(float(start), 3), round(float(end), 3), rank + 1, int(c), names[c],
             round(float(result['probs'][w, c]), 6))
            for w, (start, end) in enumerate(result['times']) for rank, c in enumerate(top[w])]


def format_timeline(result: dict, names: Sequence[str], topk: int) -> str:
    """The video, then one line per window: its time span and its top-k."""
    from tools._render import format_seconds

    probs = result['probs']
    lines = [f"{result['video']} ({result['duration']:.1f} s, {len(probs)} windows)"]
    order = np.argsort(-probs, axis=1, kind='stable')[:, :topk]
    for w, (start, end) in enumerate(result['times']):
        tops = '  '.join(f"{probs[w, c]:6.1%} {names[c]}" for c in order[w])
        lines.append(f"  {format_seconds(round(float(start), 1)):>7}-{format_seconds(round(float(end), 1)):<7} {tops}")
    return '\n'.join(lines)


def shown_classes(probs: np.ndarray, count: int) -> list:
    """The ``count`` classes with the highest peak probability over the windows (a short action counts)."""
    peak = probs.max(axis=0)
    return [int(c) for c in np.argsort(-peak, kind='stable')[:count]]


def write_timeline(result: dict, names: Sequence[str], topk: int, folder: str, num_shown: int,
                   stride: float) -> tuple:
    """``DIR/<stem>.csv`` and ``DIR/<stem>.png`` of one video; returns their paths."""
    import csv
    import io

    from tools import windows as W
    from tools._render import probability_timeline
    from utils.fs import atomic_write, atomic_write_text

    stem = W.output_stem(result['video'])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(['start_s', 'end_s', 'rank', 'class_id', 'name', 'probability'])
    writer.writerows(timeline_rows(result, names, topk))
    csv_path, png_path = os.path.join(folder, stem + '.csv'), os.path.join(folder, stem + '.png')
    atomic_write_text(csv_path, buf.getvalue())
    shown = shown_classes(result['probs'], num_shown)
    # window k is drawn over its cell of the stride grid, [k, k + 1) x stride (windows overlap or leave gaps
    # between them; the cells tile the video)
    count = len(result['probs'])
    grid = np.minimum(np.arange(count + 1) * stride, result['duration'])
    cells = np.stack([grid[:-1], grid[1:]], axis=1)
    span = result['times'][0, 1] - result['times'][0, 0]
    image = probability_timeline(cells, result['probs'][:, shown], [names[c] for c in shown], result['duration'],
                                 title=f"{os.path.basename(result['video'])}: class probability of {count} windows "
                                       f"({span:.2g} s each, every {stride:g} s)")
    atomic_write(png_path, lambda f: image.save(f, format='PNG'))
    return csv_path, png_path


def format_prediction(pred: dict) -> str:
    """``video`` then one indented line per class: probability and name."""
    lines = [pred['video']]
    lines += [f"  {p['probability']:7.2%}  {p['name']}" for p in pred['top']]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.predict', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('videos', nargs='+', metavar='VIDEO', help='video files or folders of videos')
    parser.add_argument('--topk', type=int, default=5, help='classes to show per video (default 5)')
    parser.add_argument('--views', default=None, metavar='CLIPSxCROPS',
                        help='views per video, e.g. 4x3 (default TEST.FINAL_NUM_CLIP x TEST.FINAL_NUM_CROP)')
    parser.add_argument('--json', default=None, metavar='OUT', help='also write the predictions to this file')
    parser.add_argument('--workers', type=int, default=2, help='decoding processes (default 2; 0 = in-process)')
    group = parser.add_argument_group('timeline (--timeline): predictions over time along each whole video')
    group.add_argument('--timeline', action='store_true',
                       help='score windows along each video; print, and write CSV and PNG per video')
    from tools import windows as W
    W.add_window_arguments(group)
    group.add_argument('--timeline-dir', default='timelines', metavar='DIR',
                       help='folder for <stem>.csv and <stem>.png (default timelines)')
    group.add_argument('--timeline-classes', type=int, default=5, metavar='N',
                       help='classes drawn as strips: those with the highest peak probability (default 5)')
    group.add_argument('--batch', type=int, default=16, help='windows per forward pass (default 16)')
    group.add_argument('--annotate', default=None, metavar='OUT.mp4',
                       help="write the video (one VIDEO) with the current window's top classes and probabilities "
                            "drawn on each frame (--topk of them, at most 5)")
    _common.add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    # unreadable videos are reported below, once, by this tool
    logging.getLogger('datasets.video_dataset').setLevel(logging.ERROR)

    from engine.checkpoint import load_checkpoint_file
    from engine.config import ConfigError
    try:
        if args.topk < 1:
            raise ValueError(f"--topk {args.topk}: expected at least 1")
        device = _common.resolve_device(args.device)
        checkpoint = load_checkpoint_file(args.resume)
        config = _common.load_tool_config(args.cfg, checkpoint, args.resume, args.opts)
        num_clip, num_crop = (_common.parse_views(args.views) if args.views
                              else (config.TEST.FINAL_NUM_CLIP, config.TEST.FINAL_NUM_CROP))
        model = _common.load_model(config, checkpoint, device)
        names = _common.class_names(config, _common.stored_class_names(checkpoint, config.MODEL.NUM_CLASSES))
        del checkpoint
        paths = _common.expand_videos(args.videos)
        if not paths:
            raise ValueError(f"no videos found in {' '.join(args.videos)}")
        if args.annotate and not args.timeline:
            raise ValueError(f"--annotate {args.annotate}: draws the windows of --timeline; add --timeline")
        if args.annotate and len(paths) != 1:
            raise ValueError(f"--annotate {args.annotate}: annotates one video, got {len(paths)}")
        if args.timeline:
            return _main_timeline(args, model, config, paths, names)
        predictions, unreadable = predict(model, config, paths, num_clip, num_crop,
                                          topk=min(args.topk, config.MODEL.NUM_CLASSES), workers=args.workers,
                                          names=names)
    except (OSError, ValueError, RuntimeError, ConfigError) as e:
        return _common.user_error(e)

    for pred in predictions:
        print(format_prediction(pred))
    for bad in unreadable:
        print(f"error: {bad['video']}: cannot read the video ({bad['reason']})", file=sys.stderr)
    if args.json:
        report = {'checkpoint': args.resume, 'views': f'{num_clip}x{num_crop}',
                  'score_agg': config.TEST.SCORE_AGG, 'predictions': predictions, 'unreadable': unreadable}
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
            f.write('\n')
    return _common.EXIT_UNREADABLE if unreadable else _common.EXIT_OK


def _main_timeline(args, model, config, paths, names) -> int:
    """``--timeline``: windows along each video, printed and written as CSV and PNG."""
    from tools import windows as W

    if args.timeline_classes < 1 or args.batch < 1:
        raise ValueError(f"--timeline-classes {args.timeline_classes} / --batch {args.batch}: expected at least 1")
    settings = W.settings_from_config(config, args.stride, args.window_frames, args.crop)
    W.check_stems(paths)
    topk = min(args.topk, config.MODEL.NUM_CLASSES)
    results, unreadable = timeline(model, config, paths, settings, batch=args.batch, workers=args.workers)
    os.makedirs(args.timeline_dir, exist_ok=True)
    for result in results:
        print(format_timeline(result, names, topk))
        csv_path, png_path = write_timeline(result, names, topk, args.timeline_dir,
                                            min(args.timeline_classes, config.MODEL.NUM_CLASSES), settings.stride)
        print(f"  -> {csv_path}, {png_path}")
        if args.annotate:
            from tools.annotate import annotate_video
            frames = annotate_video(result['video'], args.annotate, result['times'], result['probs'], names,
                                    min(topk, 5))
            print(f"  -> {args.annotate} ({frames} frames with the current window's top {min(topk, 5)})")
    for bad in unreadable:
        print(f"error: {bad['video']}: cannot read the video ({bad['reason']})", file=sys.stderr)
    if args.json:
        report = {'checkpoint': args.resume, 'stride': settings.stride, 'window_frames': settings.window_frames,
                  'timelines': [{'video': r['video'], 'duration': r['duration'],
                                 'windows': [{'start': row[0], 'end': row[1], 'rank': row[2], 'class_id': row[3],
                                              'name': row[4], 'probability': row[5]}
                                             for row in timeline_rows(r, names, topk)]} for r in results],
                  'unreadable': unreadable}
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2, ensure_ascii=False)
            f.write('\n')
    return _common.EXIT_UNREADABLE if unreadable else _common.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
