"""Classify your own videos with a trained Video-FocalNet.

    python -m tools.predict --cfg CFG --resume CKPT VIDEO [VIDEO ...] [--topk 5] [--views 4x3]
                            [--json OUT] [--device cpu|cuda] [--opts KEY VALUE ...]

Folders expand to the video files inside them. Every video is decoded, sampled and cropped exactly as in
evaluation (``datasets``' evaluation pipeline, ``CLIPSxCROPS`` views, default
``TEST.FINAL_NUM_CLIP x TEST.FINAL_NUM_CROP``: the published 4x3 protocol) and scored as in evaluation
(``engine.evaluator``: softmax summed over views, or mean logits with ``TEST.SCORE_AGG logits``); the
printed probabilities are the view-averaged ones. Class names come from ``DATA.LABEL_LIST``.

Videos that cannot be read are reported on one line each and the others are still predicted; the exit
code is then 4. A checkpoint that does not fit the config stops with one error listing the keys (exit 2;
docs/exit-codes.md).
The original code had no prediction tool.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

import torch

from tools import _common


def predict(model: torch.nn.Module, config, paths: Sequence[str], num_clip: int, num_crop: int, topk: int = 5,
            workers: int = 0, max_clips_per_forward: int = 16) -> tuple:
    """Top-k classes of each readable video.

    Args:
        model: the model in eval mode (on its device).
        config: the config it was built from.
        paths: video files.
        num_clip, num_crop: views per video.
        topk: classes to return per video.
        workers: DataLoader worker processes decoding videos.
        max_clips_per_forward: views forwarded together.

    Returns:
        (predictions, unreadable): predictions = list of ``{'video', 'top': [{'class_id', 'name',
        'probability'}, ...]}`` in the order of ``paths`` (unreadable ones left out); unreadable = list of
        ``{'video', 'reason'}``.
    """
    from torch.utils.data import DataLoader

    from datasets import normalize_clip
    from datasets.video_dataset import EvalCollate
    from engine.evaluator import evaluate, topk_predictions

    names = _common.class_names(config)
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


def format_prediction(pred: dict) -> str:
    """``video`` then one indented line per class: probability and name."""
    lines = [pred['video']]
    lines += [f"  {p['probability']:7.2%}  {p['name']}" for p in pred['top']]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('videos', nargs='+', metavar='VIDEO', help='video files or folders of videos')
    parser.add_argument('--topk', type=int, default=5, help='classes to show per video (default 5)')
    parser.add_argument('--views', default=None, metavar='CLIPSxCROPS',
                        help='views per video, e.g. 4x3 (default TEST.FINAL_NUM_CLIP x TEST.FINAL_NUM_CROP)')
    parser.add_argument('--json', default=None, metavar='OUT', help='also write the predictions to this file')
    parser.add_argument('--workers', type=int, default=2, help='decoding processes (default 2; 0 = in-process)')
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
        del checkpoint
        paths = _common.expand_videos(args.videos)
        if not paths:
            raise ValueError(f"no videos found in {' '.join(args.videos)}")
        predictions, unreadable = predict(model, config, paths, num_clip, num_crop,
                                          topk=min(args.topk, config.MODEL.NUM_CLASSES), workers=args.workers)
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


if __name__ == '__main__':
    sys.exit(main())
