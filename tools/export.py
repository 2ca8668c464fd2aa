"""Export a trained Video-FocalNet for deployment: ``torch.export`` (``.pt2``) or ONNX (``.onnx``), checked.

    python -m tools.export --resume CKPT --out FILE.pt2|FILE.onnx [--cfg CFG] [--opts KEY VALUE ...]
                           [--batch 2] [--frames T] [--static] [--opset 18] [--atol 1e-4] [--rtol 1e-4]

The model is built from the checkpoint's config (or ``--cfg``) with its weights, in eval mode, on the CPU,
and exported for float32 clips ``(batch, frames, 3, S, S)`` with ``S = DATA.INPUT_SIZE``, normalised like
``datasets.normalize_clip`` (ImageNet mean/std on 0-255 values); the output is ``(batch, num_classes)``
logits. The batch size and the clip length stay dynamic (1..1024 clips; 2..64 tubelets of
``MODEL.TUBELET_SIZE`` frames) unless ``--static``; the spatial size is fixed. ``torch.export`` fixes a
dimension whose example size is 1, so a dynamic export needs an example of at least 2 clips of at least 2
tubelets (default: 2 clips of ``DATA.NUM_FRAMES``); ``--static --batch 1`` makes a fixed batch-1 model.

* ``.pt2``: ``torch.export.save``; loads with ``torch.export.load(FILE).module()`` and PyTorch alone. The
  class names and the input description are stored as extra files (``class_names.json``, ``input.json``).
* ``.onnx``: the ``torch.export``-based ONNX exporter at opset 18 (the lowest it targets; onnxruntime
  >= 1.14 and TensorRT >= 8.6 read it). Needs the optional packages ``onnx`` and ``onnxscript``. The class
  names and the input description are in the model's metadata (``class_names``, ``input``: JSON).

Every export is checked before the command succeeds: the saved file is loaded back and run (ONNX with
onnxruntime on the CPU, when installed) on two random clips, the example's shape and, when dynamic, one clip of
another length; every logit must satisfy ``|exported - pytorch| <= atol + rtol * |pytorch|``
(default 1e-4 each; float32 exports differ from eager PyTorch by rounding only, about 1e-6). The file is
written under a temporary name and renamed only once the check passed: a failed check (exit code 1) leaves
an existing file of that name as it was. The original code had no export.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from tools import _common
from utils.fs import temp_path

ONNX_OPSET = 18
MAX_BATCH, MAX_TUBELETS = 1024, 64


class ExportCheckError(RuntimeError):
    """The exported model's logits differ from PyTorch's by more than the tolerance."""


def input_description(config, num_classes: int) -> Dict[str, object]:
    """What the exported model takes and returns (stored with it)."""
    from datasets.transforms import MEAN, STD
    size = config.DATA.INPUT_SIZE
    return {'input': 'clips', 'shape': ['batch', 'frames', 3, size, size], 'dtype': 'float32',
            'frames_multiple_of': config.MODEL.TUBELET_SIZE, 'trained_frames': config.DATA.NUM_FRAMES,
            'normalisation': 'per RGB channel (x - mean) / std on 0-255 values', 'mean': list(MEAN),
            'std': list(STD), 'output': f'logits (batch, {num_classes})'}


def dynamic_shapes(tubelet: int) -> dict:
    """``torch.export`` dims for the batch and the clip length (a multiple of the tubelet)."""
    batch = torch.export.Dim('batch', min=1, max=MAX_BATCH)
    if tubelet == 1:
        frames = torch.export.Dim('frames', min=2, max=MAX_TUBELETS)
    else:
        frames = tubelet * torch.export.Dim('tubelets', min=2, max=MAX_TUBELETS)
    return {'x': {0: batch, 1: frames}}


def check_shapes(example: torch.Size, tubelet: int, static: bool) -> List[tuple]:
    """The input shapes the check runs: the example's and, when dynamic, one clip of another length."""
    shapes = [tuple(example)]
    if not static:
        t = example[1]
        shapes.append((1, t + tubelet if t < tubelet * MAX_TUBELETS else t - tubelet, *example[2:]))
    return shapes


def compare(name: str, run: Callable[[torch.Tensor], np.ndarray], model: torch.nn.Module, shapes: Sequence[tuple],
            atol: float, rtol: float, seed: int = 0) -> float:
    """Largest |exported - pytorch| over random clips of ``shapes``; ``ExportCheckError`` past the tolerance."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            reference = model(x).numpy()
        got = np.asarray(run(x))
        if got.shape != reference.shape:
            raise ExportCheckError(f"{name}: output shape {got.shape} for input {shape}, PyTorch gives "
                                   f"{reference.shape}")
        diff = np.abs(got - reference)
        worst = max(worst, float(diff.max()))
        if not np.all(diff <= atol + rtol * np.abs(reference)):
            raise ExportCheckError(f"{name}: logits differ from PyTorch by up to {diff.max():.3g} for input "
                                   f"{shape} (tolerance {atol:g} + {rtol:g} * |logit|)")
    return worst


def export_pt2(model: torch.nn.Module, example: torch.Tensor, out: str, dims: Optional[dict],
               extra: Dict[str, str]) -> Callable[[torch.Tensor], np.ndarray]:
    """``torch.export`` to ``out``; returns a function running the file as loaded back."""
    program = torch.export.export(model, (example,), dynamic_shapes=dims)
    torch.export.save(program, out, extra_files=extra)
    loaded = torch.export.load(out).module()

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()
    return run


def export_onnx(model: torch.nn.Module, example: torch.Tensor, out: str, dims: Optional[dict],
                metadata: Dict[str, str], opset: int = ONNX_OPSET) -> Optional[Callable[[torch.Tensor], np.ndarray]]:
    """ONNX export to ``out`` with ``metadata`` in the file; returns an onnxruntime runner, or None when
    onnxruntime is not installed."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it; a clear message instead of its ImportError)
    except ImportError as e:
        raise RuntimeError(f"ONNX export needs the optional packages onnx and onnxscript "
                           f"({e.name} is missing): pip install onnx onnxscript onnxruntime") from None
    program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, dynamic_shapes=dims,
                                input_names=['clips'], output_names=['logits'], external_data=False,
                                verbose=False)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, out)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])

    def run(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {'clips': x.numpy()})[0]
    return run


def export(model: torch.nn.Module, config, out: str, names: Sequence[str], batch: int = 2,
           frames: Optional[int] = None, static: bool = False, opset: int = ONNX_OPSET, atol: float = 1e-4,
           rtol: float = 1e-4) -> Dict[str, object]:
    """Export ``model`` (eval mode, CPU) to ``out`` (``.pt2`` or ``.onnx``) and check it.

    Returns dict: ``format``, ``path``, ``checked_with`` (None when onnxruntime is missing), ``shapes``
    (checked input shapes), ``max_abs_diff``.
    """
    fmt = os.path.splitext(out)[1].lower()
    if fmt not in ('.pt2', '.onnx'):
        raise ValueError(f"--out {out}: expected a .pt2 (torch.export) or .onnx file name")
    tubelet = config.MODEL.TUBELET_SIZE
    frames = config.DATA.NUM_FRAMES if frames is None else frames
    if batch < 1 or frames < 1 or frames % tubelet:
        raise ValueError(f"--batch {batch} --frames {frames}: expected at least 1 clip of a positive multiple of "
                         f"MODEL.TUBELET_SIZE ({tubelet}) frames")
    if not static and (batch < 2 or frames < 2 * tubelet or frames > tubelet * MAX_TUBELETS):
        raise ValueError(f"--batch {batch} --frames {frames}: a dynamic export needs an example of at least 2 clips "
                         f"of 2..{MAX_TUBELETS} tubelets ({tubelet} frames each; torch.export fixes a size-1 "
                         f"dimension); use --static for a fixed shape")
    size = config.DATA.INPUT_SIZE
    example = torch.randn(batch, frames, 3, size, size)
    dims = None if static else dynamic_shapes(tubelet)
    description = input_description(config, len(names))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # written under a temporary name and renamed once checked: a failed export leaves an older file intact
    tmp = temp_path(out) + fmt  # the extension too: torch.export.save warns about a name without .pt2
    try:
        if fmt == '.pt2':
            run = export_pt2(model, example, tmp, dims, {'class_names.json': json.dumps(list(names)),
                                                         'input.json': json.dumps(description)})
            checked_with = 'torch.export.load'
        else:
            run = export_onnx(model, example, tmp, dims, {'class_names': json.dumps(list(names)),
                                                          'input': json.dumps(description)}, opset)
            checked_with = 'onnxruntime (CPU)' if run is not None else None
        shapes = check_shapes(example.shape, tubelet, static)
        worst = compare(out, run, model, shapes, atol, rtol) if run is not None else None
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dict(format=fmt[1:], path=out, checked_with=checked_with, shapes=shapes, max_abs_diff=worst)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.export', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output file: .pt2 (torch.export) or .onnx')
    parser.add_argument('--batch', type=int, default=2, help='clips in the example input (default 2)')
    parser.add_argument('--frames', type=int, default=None, help='frames of the example (default DATA.NUM_FRAMES)')
    parser.add_argument('--static', action='store_true', help="fix the batch size and clip length to the example's")
    parser.add_argument('--opset', type=int, default=ONNX_OPSET, help=f'ONNX opset (default {ONNX_OPSET})')
    parser.add_argument('--atol', type=float, default=1e-4, help='check: absolute tolerance (default 1e-4)')
    parser.add_argument('--rtol', type=float, default=1e-4, help='check: relative tolerance (default 1e-4)')
    _common.add_model_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')

    from engine.checkpoint import load_checkpoint_file
    from engine.config import ConfigError
    try:
        if args.device == 'cuda':
            raise ValueError("--device cuda: the export runs on the CPU (the exported model runs anywhere)")
        checkpoint = load_checkpoint_file(args.resume)
        config = _common.load_tool_config(args.cfg, checkpoint, args.resume, args.opts)
        model = _common.load_model(config, checkpoint, torch.device('cpu'))
        names = _common.class_names(config, _common.stored_class_names(checkpoint, config.MODEL.NUM_CLASSES))
        del checkpoint
        result = export(model, config, args.out, names, batch=args.batch, frames=args.frames, static=args.static,
                        opset=args.opset, atol=args.atol, rtol=args.rtol)
    except ExportCheckError as e:
        print(f"error: check failed: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kind = 'torch.export' if result['format'] == 'pt2' else f'ONNX opset {args.opset}'
    dynamic = 'static shape' if args.static else 'dynamic batch and clip length'
    print(f"wrote {result['path']} ({kind}, {dynamic}, {len(names)} classes)")
    shapes = ', '.join('x'.join(map(str, s)) for s in result['shapes'])
    if result['checked_with'] is None:
        print("not checked: onnxruntime is not installed (pip install onnxruntime)")
    else:
        print(f"checked with {result['checked_with']} against PyTorch on {shapes}: max |diff| "
              f"{result['max_abs_diff']:.2e} (tolerance {args.atol:g} + {args.rtol:g} * |logit|)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
