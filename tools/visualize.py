"""What the focal modulators look at: spatial and temporal modulator magnitudes over the input frames.

    python -m tools.visualize --cfg CFG --resume CKPT VIDEO --out DIR [--stage N] [--block M] [--clip K]

Samples the clip exactly as evaluation does (one centre crop; clip ``K`` of ``TEST.NUM_CLIP``), runs the
model once with ``forward_with_modulators`` and, for the chosen block (default: the last block of the last
stage), draws per frame

* the input frame,
* the spatial modulator magnitude: L2 norm over channels of the spatial modulator (the output of ``h``),
  per position,
* the temporal modulator magnitude: the same for the temporal modulator (the output of ``h_temporal``),

as heat maps upsampled bilinearly to the frame and blended over it. Writes ``DIR/<video>_modulators.png``
(rows = frames, columns = input / spatial / temporal) and ``DIR/<video>_modulators.gif`` (one frame per
input frame), and prints the predicted class (named from ``DATA.LABEL_LIST``, else from the names the checkpoint
carries). Colours are scaled per column over the whole clip (1st to 99th percentile), so brightness
can be compared across frames of one column, not between the two columns.

The original released no visualisation code (its GitHub issue #5 asks for it); its modules stored these
tensors as attributes on every forward. Here the model returns them only when asked.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from tools import _common, _render

COLUMNS = ('input', 'spatial', 'temporal')  # modulator magnitudes; the colour bar says so


def select_block(mods: dict, stage: int, block: int) -> str:
    """The key ``layers.{stage}.blocks.{block}`` of ``mods``; negative indices count from the end."""
    stages = sorted({int(k.split('.')[1]) for k in mods})
    try:
        s = stages[stage]
    except IndexError:
        raise ValueError(f"--stage {stage}: the model has stages 0..{len(stages) - 1}") from None
    blocks = sorted(int(k.split('.')[3]) for k in mods if int(k.split('.')[1]) == s)
    try:
        b = blocks[block]
    except IndexError:
        raise ValueError(f"--block {block}: stage {s} has blocks 0..{len(blocks) - 1}") from None
    return f'layers.{s}.blocks.{b}'


def magnitude(modulator: torch.Tensor) -> np.ndarray:
    """(B=1, T', H', W', C) modulator -> (T', H', W') L2 norm over channels, float32 numpy."""
    if modulator.dim() != 5 or modulator.shape[0] != 1:
        raise ValueError(f"expected a modulator of shape (1, T', H', W', C), got {tuple(modulator.shape)}")
    return modulator[0].float().norm(dim=-1).cpu().numpy()


def scale_to_unit(maps: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Scale to [0, 1] between the given percentiles of all values (one scale for the whole clip)."""
    lo, hi = np.percentile(maps, [low_pct, high_pct])
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        return np.zeros_like(maps, dtype=np.float32)
    return np.clip((maps - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def render(frames: np.ndarray, spatial: np.ndarray, temporal: np.ndarray, title: str = '',
           cell: Optional[int] = None, alpha: float = 0.6) -> tuple:
    """Draw the grid image and the GIF frames.

    Args:
        frames: (T, H, W, 3) uint8 input frames.
        spatial: (T', h, w) spatial modulator magnitudes in [0, 1]; frame t uses map t * T' // T
            (tubelets: one map covers several frames).
        temporal: (T', h, w) temporal modulator magnitudes in [0, 1].
        title: text above the grid.
        cell: displayed frame size in pixels (default: the frame size, at least 128).
        alpha: heat-map opacity.

    Returns:
        (grid PIL image, list of PIL images, one per frame).
    """
    t = frames.shape[0]
    if spatial.shape != temporal.shape or t % spatial.shape[0]:
        raise ValueError(f"maps {spatial.shape} / {temporal.shape} do not fit {t} frames")
    size = cell or max(128, frames.shape[1])
    rows, labels = [], []
    for i in range(t):
        frame = np.asarray(Image.fromarray(frames[i]).resize((size, size), Image.BILINEAR))
        j = i * spatial.shape[0] // t
        rows.append([frame, _render.overlay_heatmap(frame, spatial[j], alpha),
                     _render.overlay_heatmap(frame, temporal[j], alpha)])
        labels.append(f'frame {i}')
    bar = _render.colorbar(min(3 * size, 360), 16, low='weak modulation', high='strong')
    grid = _render.labelled_grid(rows, COLUMNS, labels, title=title, footer=bar)
    gif = [_render.labelled_grid([row], COLUMNS, [label], title=title, footer=bar)
           for row, label in zip(rows, labels)]
    return grid, gif


@torch.no_grad()
def visualize(model: torch.nn.Module, clip: torch.Tensor, stage: int = -1, block: int = -1) -> dict:
    """Run the model on one uint8 clip (T, 3, S, S) and return the maps of the chosen block.

    Returns dict: ``key`` (block name), ``frames`` (T, S, S, 3) uint8, ``spatial``/``temporal`` (T', h, w)
    magnitudes in [0, 1] and ``raw_spatial``/``raw_temporal`` unscaled, ``probs`` (K,) softmax.
    """
    from datasets import normalize_clip
    device = next(model.parameters()).device
    x = normalize_clip(clip.unsqueeze(0).to(device))
    logits, mods = model.forward_with_modulators(x)
    key = select_block(mods, stage, block)
    missing = {'modulator', 'modulator_temporal'} - set(mods[key])
    if missing:  # MODEL.FOCAL.DESIGN spatial / joint / factorized blocks have one modulator only
        raise ValueError(f"{key} has no {' or '.join(sorted(missing))}: the maps need a block with a spatial and a "
                         f"temporal modulator (MODEL.FOCAL.DESIGN parallel or divided)")
    spatial = magnitude(mods[key]['modulator'])
    temporal = magnitude(mods[key]['modulator_temporal'])
    return dict(key=key, frames=clip.permute(0, 2, 3, 1).cpu().numpy(), raw_spatial=spatial,
                raw_temporal=temporal, spatial=scale_to_unit(spatial), temporal=scale_to_unit(temporal),
                probs=logits.float().softmax(-1)[0].cpu())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.visualize', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('video', help='video file')
    parser.add_argument('--out', required=True, help='folder for the PNG and GIF')
    parser.add_argument('--stage', type=int, default=-1, help='stage index (default -1: the last)')
    parser.add_argument('--block', type=int, default=-1, help='block index in the stage (default -1: the last)')
    parser.add_argument('--clip', type=int, default=0, help='which of the TEST.NUM_CLIP clips (default 0)')
    parser.add_argument('--cell', type=int, default=None, help='displayed frame size in pixels')
    parser.add_argument('--palette', action='store_true',
                        help='save the PNG with a 256-colour palette (about 3x smaller, e.g. for documentation)')
    _common.add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    # an unreadable video is this tool's one error line below, not also the evaluation's warning about it
    logging.getLogger('datasets.video_dataset').setLevel(logging.ERROR)

    from engine.checkpoint import load_checkpoint_file
    from engine.config import ConfigError
    try:
        device = _common.resolve_device(args.device)
        checkpoint = load_checkpoint_file(args.resume)
        config = _common.load_tool_config(args.cfg, checkpoint, args.resume, args.opts)
        if not 0 <= args.clip < config.TEST.NUM_CLIP:
            raise ValueError(f"--clip {args.clip}: expected 0..{config.TEST.NUM_CLIP - 1} "
                             f"(TEST.NUM_CLIP is {config.TEST.NUM_CLIP})")
        model = _common.load_model(config, checkpoint, device)
        names = _common.class_names(config, _common.stored_class_names(checkpoint, config.MODEL.NUM_CLASSES))
        item = _common.eval_dataset(config, [args.video], config.TEST.NUM_CLIP, 1)[0]
        if 'unreadable' in item:
            raise ValueError(f"{args.video}: cannot read the video ({item['unreadable'][2]})")
        result = visualize(model, item['imgs'][args.clip], args.stage, args.block)  # views: clips x 1 crop
    except (OSError, ValueError, RuntimeError, ConfigError) as e:
        return _common.user_error(e)

    top = int(result['probs'].argmax())
    label = names[top]
    name = os.path.splitext(os.path.basename(args.video))[0]
    shown = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(args.video))), name)
    title = f"{shown}\n{result['key']}\npredicted: {label} ({float(result['probs'][top]):.2f})"
    grid, gif = render(result['frames'], result['spatial'], result['temporal'], title, args.cell)
    os.makedirs(args.out, exist_ok=True)
    png_path = os.path.join(args.out, f'{name}_modulators.png')
    gif_path = os.path.join(args.out, f'{name}_modulators.gif')
    if args.palette:
        grid = grid.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    grid.save(png_path, optimize=True)
    _render.save_gif(gif, gif_path)
    print(f"predicted: {label} ({float(result['probs'][top]):.2f})\nwrote {png_path}\nwrote {gif_path}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
