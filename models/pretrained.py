"""Map 2D FocalNet-SRF and Video-FocalNet state dicts onto a Video-FocalNet (``TRAIN.PRETRAINED_PATH``).

Pure tensor bookkeeping, no file access and no model: :func:`map_pretrained_state_dict` takes a source
state dict and the target's ``{key: shape}`` and returns the tensors to copy plus a report. File loading,
the head re-draw and the copy into a model live in :func:`engine.checkpoint.load_pretrained`.

Accepted sources (detected from the key names):

* ``focalnet2d``: microsoft/FocalNet ``focalnet_{tiny,small,base}_srf.pth``. The video model reuses the 2D
  names, so every spatial tensor maps 1:1.
* ``timm``: timm's ``focalnet_*_srf`` (``stem.*``, downsamplers registered at the start of the *next*
  stage, ``head.fc.*``, 1x1 convolutions ``[C, C, 1, 1]`` where microsoft uses ``Linear`` ``[C, C]``).
  Renamed and reshaped to the microsoft layout first (the inverse of ``timm.models.focalnet.checkpoint_filter_fn``).
* ``video``: a Video-FocalNet checkpoint (fine-tuning on another dataset): temporal tensors are copied too.
  (A checkpoint of the ``spatial`` or ``joint`` design has no temporal-only tensors, so it reads as
  ``focalnet2d``: everything loads except the head, which is re-drawn.)

Every design of ``MODEL.FOCAL.DESIGN`` takes the 2D tensors wherever they have a place: the stem,
downsamplers, norms, MLPs and every spatial modulation (``f``, ``h``, ``proj``, ``focal_layers``) keep the 2D
names. New, left at init: the temporal tensors (``is_temporal_key``). Inflated: the joint design's 3-D focal
kernels (and a tubelet stem).

Differences from the original (spec section 5): the original loaded with ``strict=False`` and only
``load_state_dict``'s size check stood between a wrong checkpoint and a half-initialised model. Here every
target tensor is accounted for (copied, inflated, left at init because it is temporal, or re-drawn because
it is the head) and any missing, surplus or differently-shaped spatial tensor is an error raised before
anything is copied.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

__all__ = [
    'PretrainedMismatchError', 'HEAD_KEYS', 'STEM_WEIGHT_KEY', 'is_temporal_key', 'detect_layout',
    'timm_to_microsoft', 'map_pretrained_state_dict', 'redraw_head_',
]

HEAD_KEYS = ('head.weight', 'head.bias')
STEM_WEIGHT_KEY = 'patch_embed.proj.weight'
# Sub-modules that exist only in the video models, never in a 2D checkpoint: the released (parallel) design's
# temporal branch (spec 1.6), the divided design's temporal sub-layer and the factorized design's temporal
# encoder (README "Design space").
_TEMPORAL_KEY = re.compile(r'(?:^|\.)(?:f_temporal|h_temporal|focal_layers_temporal|norm_temporal|'
                           r'modulation_temporal|gamma_temporal|temporal_encoder)(?:\.|$)')
# The joint design's 3-D depthwise focal kernels [C, 1, k, k, k], inflated from the 2D [C, 1, k, k] ones.
_SPATIAL_FOCAL_KERNEL = re.compile(r'^layers\.\d+\.blocks\.\d+\.modulation\.focal_layers\.\d+\.0\.weight$')
# Number of offending keys quoted per category in an error message (the counts are always given).
_MAX_QUOTED = 4


class PretrainedMismatchError(ValueError):
    """The pretrained checkpoint does not fit the model (nothing was copied)."""


def is_temporal_key(key: str) -> bool:
    """True for tensors that only video models have: the temporal branch (``f_temporal``, ``h_temporal``,
    ``focal_layers_temporal``), the divided design's ``norm_temporal``/``modulation_temporal``/``gamma_temporal``
    and the factorized design's ``temporal_encoder``/``norm_temporal``."""
    return _TEMPORAL_KEY.search(key) is not None


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return ``'timm'``, ``'video'`` or ``'focalnet2d'`` (microsoft FocalNet) for a source state dict."""
    if 'stem.proj.weight' in state_dict or any(k.startswith('head.fc.') for k in state_dict):
        return 'timm'
    if any(is_temporal_key(k) for k in state_dict):
        return 'video'
    return 'focalnet2d'


_TIMM_RENAMES: Sequence[Tuple[re.Pattern, str]] = (
    (re.compile(r'^stem\.'), 'patch_embed.'),
    (re.compile(r'\.ls([12])\.gamma$'), r'.gamma_\1'),         # layerscale
    (re.compile(r'\.norm([12])_post\.'), r'.norm\1.'),         # post-norm blocks
    (re.compile(r'\.modulation\.norm\.'), '.modulation.ln.'),  # post-LN inside the modulation
    (re.compile(r'^head\.fc\.'), 'head.'),
)
_TIMM_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.')


def timm_to_microsoft(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename timm FocalNet keys to the microsoft (and Video-FocalNet) names. Shapes are left alone.

    timm registers the downsampler of stage i-1 as ``layers.{i}.downsample``; microsoft keeps it at the end
    of stage i-1. A ``layers.0.downsample`` (timm's overlapping-downsample variant) has no counterpart and is
    passed through under an impossible name so that it is reported as surplus.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in _TIMM_RENAMES:
            new = pattern.sub(repl, new)
        match = _TIMM_DOWNSAMPLE.match(new)
        if match and int(match.group(1)) > 0:
            new = f'layers.{int(match.group(1)) - 1}.downsample.' + new[match.end():]
        out[new] = value
    return out


def _conv1x1_as_linear(tensor: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """Reshape a timm 1x1-conv weight [O, I, 1, 1] to a Linear weight [O, I] (or back) when that is the target."""
    src = tuple(tensor.shape)
    if src == tuple(shape) + (1, 1) or tuple(shape) == src + (1, 1):
        return tensor.reshape(shape)
    return tensor


def _inflate(weight: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor | None:
    """Inflate a 2D kernel [O, I, k, k] to a 3D one [O, I, t, k, k]: repeat over time, divide by t.

    Used for the tubelet stem (the original's rule, spec 5.3) and the joint design's depthwise focal kernels
    (I3D's rule): averaging keeps the response to a static clip equal to the 2D response (away from the
    clip's first and last frames for a padded kernel). Returns None when the shapes are not such a pair.
    """
    if weight.dim() != 4 or len(shape) != 5 or tuple(weight.shape) != tuple(shape[:2]) + tuple(shape[3:]):
        return None
    depth = shape[2]
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


def _focal_level_hint(mismatched: Sequence[Tuple[str, tuple, tuple]]) -> str:
    """Explain a mismatch of ``modulation.f`` rows (2C + L + 1) in terms of focal levels, e.g. LRF vs SRF."""
    for key, src, dst in mismatched:
        if key.endswith('.modulation.f.weight') and len(src) == 2 and len(dst) == 2 and src[1] == dst[1]:
            channels = dst[1]
            src_level, dst_level = src[0] - 2 * channels - 1, dst[0] - 2 * channels - 1
            return (f' The checkpoint has focal level {src_level}, the model {dst_level} '
                    f'(e.g. an LRF checkpoint (level 3) into an SRF model (level 2)): set MODEL.FOCAL.FOCAL_LEVELS '
                    f'to match or use the SRF checkpoint.')
    return ''


def _quote(items: Sequence, total: int) -> str:
    shown = ', '.join(str(i) for i in items[:_MAX_QUOTED])
    return shown + (f', ... ({total - _MAX_QUOTED} more)' if total > _MAX_QUOTED else '')


def map_pretrained_state_dict(
        source: Mapping[str, torch.Tensor],
        target_shapes: Mapping[str, Sequence[int]],
        source_name: str = 'checkpoint',
        keep_head: bool = True,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Decide, for every target tensor, where its value comes from.

    Args:
        source: source state dict (microsoft, timm or video layout; wrapper prefixes already stripped).
            Tensors may live on the ``meta`` device (only shapes are needed to plan).
        target_shapes: ``{key: shape}`` of the Video-FocalNet to initialise, in registration order.
        source_name: file name used in error messages.
        keep_head: keep a video checkpoint's head when its shape fits (False: always a new head, for
            fine-tuning on other classes that happen to be as many as the checkpoint's).

    Returns:
        ``(tensors, report)``: ``tensors`` maps target keys to the values to copy (already renamed, reshaped
        and inflated); ``report`` has ``layout`` and the key lists ``loaded`` (copied as they are),
        ``inflated`` (stem repeated over the tubelet, the joint design's 3-D focal kernels over time),
        ``skipped`` (source keys that are not used: the source's head), ``left_at_init`` (temporal tensors
        absent from a 2D source) and ``reinitialised`` (the head, to be re-drawn by the caller).

    Raises:
        PretrainedMismatchError: some spatial target tensor is missing from the source or has another shape,
            or the source has tensors the model has no place for (e.g. more blocks than the model).
    """
    source = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    layout = detect_layout(source)
    if layout == 'timm':
        source = timm_to_microsoft(source)
    from_video = layout == 'video'

    tensors: Dict[str, torch.Tensor] = {}
    report: Dict[str, object] = dict(layout=layout, loaded=[], inflated=[], skipped=[], left_at_init=[],
                                     reinitialised=[])
    missing: List[str] = []
    mismatched: List[Tuple[str, tuple, tuple]] = []
    for key, shape in target_shapes.items():
        shape = tuple(shape)
        value = source.get(key)
        if key in HEAD_KEYS:
            # A head is only worth keeping from a video checkpoint with the same classes; an ImageNet head
            # (1000 classes) never is, even when the class counts happen to agree.
            if keep_head and from_video and value is not None and tuple(value.shape) == shape:
                tensors[key] = value
                report['loaded'].append(key)
            else:
                report['reinitialised'].append(key)
            continue
        if is_temporal_key(key) and not from_video:
            report['left_at_init'].append(key)
            continue
        if value is None:
            missing.append(key)
            continue
        if layout == 'timm':
            value = _conv1x1_as_linear(value, shape)
        if tuple(value.shape) == shape:
            tensors[key] = value
            report['loaded'].append(key)
            continue
        inflatable = key == STEM_WEIGHT_KEY or _SPATIAL_FOCAL_KERNEL.match(key) is not None
        inflated = _inflate(value, shape) if inflatable else None
        if inflated is not None:
            tensors[key] = inflated
            report['inflated'].append(key)
        else:
            mismatched.append((key, tuple(value.shape), shape))

    surplus = [k for k in source if k not in target_shapes and k not in HEAD_KEYS]
    report['skipped'] = [k for k in source if k in HEAD_KEYS and k not in tensors]

    if missing or mismatched or surplus:
        problems = []
        if mismatched:
            problems.append(f'{len(mismatched)} tensor(s) with other shapes (' + _quote(
                [f'{k}: checkpoint {list(s)} vs model {list(d)}' for k, s, d in mismatched], len(mismatched)) + ')')
        if missing:
            problems.append(f'{len(missing)} model tensor(s) missing from the checkpoint ('
                            + _quote(missing, len(missing)) + ')')
        if surplus:
            problems.append(f'{len(surplus)} checkpoint tensor(s) with no place in the model ('
                            + _quote(surplus, len(surplus)) + ')')
        raise PretrainedMismatchError(
            f'{source_name}: cannot initialise the model from this {layout}-layout checkpoint, nothing was '
            f'loaded: ' + '; '.join(problems) + '.' + _focal_level_hint(mismatched))
    return tensors, report


@torch.no_grad()
def redraw_head_(weight: torch.Tensor, bias: torch.Tensor | None, std: float = 0.02) -> None:
    """Re-draw a classifier head in place the way the original did for ImageNet initialisation (spec 5.2).

    Both the weight AND the bias are drawn from a normal with std ``std`` truncated at +-2 (absolute, timm's
    ``trunc_normal_`` default, so effectively untruncated); a fresh model would have a zero bias. Kept for
    numerical fidelity with the published fine-tuning runs.
    """
    torch.nn.init.trunc_normal_(weight, std=std, a=-2.0, b=2.0)
    if bias is not None:
        torch.nn.init.trunc_normal_(bias, std=std, a=-2.0, b=2.0)
