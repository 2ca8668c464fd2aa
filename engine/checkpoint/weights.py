"""ImageNet / video initialisation of a Video-FocalNet (``load_pretrained``); strict loading of checkpoint
weights (``load_model_weights``, ``extract_state_dict``, ``unwrap_model``) lives in ``models/weights.py``.

Differences from the original (spec 4.7, 5): to fine-tune on other classes use ``TRAIN.PRETRAINED_PATH``
(:func:`load_pretrained`, which maps the released layouts with ``models/pretrained.py``); every check happens
before the first copy.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Union

import torch

from engine.checkpoint.loading import CheckpointError, PathLike, load_checkpoint_mapped
from models.pretrained import map_pretrained_state_dict, redraw_head_
from models.weights import INPUT_KEYS, MODEL_KEYS, _checkpoint_and_source, check_finite, check_stored_config, \
    config_differences, extract_state_dict, load_model_weights, non_finite_allowed, set_allow_non_finite, \
    unwrap_model

_logger = logging.getLogger(__name__)

__all__ = ['INPUT_KEYS', 'MODEL_KEYS', 'check_finite', 'check_stored_config', 'config_differences',
           'extract_state_dict', 'load_model_weights', 'load_pretrained', 'pretrained_problem',
           'set_allow_non_finite', 'unwrap_model']

# TRAIN.PRETRAINED_HEAD: keep a fitting video head ('auto') or always draw a new one ('new')
PRETRAINED_HEAD_MODES = ('auto', 'new')


def load_pretrained(model: torch.nn.Module, path: Union[PathLike, Mapping[str, Any]], config: Any = None,
                    logger: Optional[logging.Logger] = None) -> Dict[str, Any]:
    """Initialise a Video-FocalNet from ImageNet FocalNet-SRF weights or from another video checkpoint.

    Spatial tensors are copied (renamed/reshaped from timm's layout when needed), the stem is inflated over
    the tubelet (repeat / ts, bias kept), temporal tensors stay at their init (they are copied from a video
    checkpoint), and the head is re-drawn (weight and bias, trunc-normal std 0.02, like the original) unless
    the source is a video checkpoint with the same number of classes. Every check happens before the first
    copy: a mismatch (e.g. an LRF checkpoint into an SRF model) raises and leaves the model unchanged.

    Args:
        model: the model to initialise (may be wrapped in DDP or compiled).
        path: checkpoint file (``.pth`` / ``.bin`` / ``.safetensors``) or an already loaded checkpoint dict.
        config: the run's config: names the model in the log; its TRAIN.PRETRAINED_HEAD 'new' re-draws the
            head of a video checkpoint even when its shape fits (other classes, as many).
        logger: where to log the summary (default: this module's logger).

    Returns:
        Report dict: ``source``, ``layout`` ('focalnet2d' | 'timm' | 'video') and the key lists ``loaded``,
        ``inflated``, ``skipped`` (source keys not used: its head), ``left_at_init`` (temporal keys) and
        ``reinitialised`` (head keys re-drawn).
    """
    log = logger or _logger
    checkpoint, source = _checkpoint_and_source(path)
    state = extract_state_dict(checkpoint, 'model', source)
    if not non_finite_allowed():  # a NaN start only shows up later as "loss is nan", after a folder was made
        check_finite(state, source)
    target = unwrap_model(model)
    own = target.state_dict()
    head_mode = getattr(getattr(config, 'TRAIN', None), 'PRETRAINED_HEAD', 'auto')
    if head_mode not in PRETRAINED_HEAD_MODES:
        raise ValueError(f"TRAIN.PRETRAINED_HEAD: expected one of {list(PRETRAINED_HEAD_MODES)}, got {head_mode!r}")
    tensors, report = map_pretrained_state_dict(state, {k: v.shape for k, v in own.items()}, source,
                                                keep_head=head_mode == 'auto')
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value)
        head = getattr(target, 'head', None)
        if report['reinitialised'] and isinstance(head, torch.nn.Linear):
            redraw_head_(head.weight, head.bias)
        elif report['reinitialised']:
            for key in report['reinitialised']:
                redraw_head_(own[key], None)
    report = dict(source=source, **report)
    name = getattr(getattr(config, 'MODEL', None), 'NAME', '') or type(target).__name__
    if report['layout'] == 'video' and report['reinitialised'] and 'head.weight' in state:
        # fine-tuning a video model on other classes: say that the classifier is new, and why
        classes = state['head.weight'].shape[0]
        why = (f"the model has {own['head.weight'].shape[0]} classes" if classes != own['head.weight'].shape[0]
               else "TRAIN.PRETRAINED_HEAD new")
        log.info('%s: its %d-class head is dropped (%s); a new head is drawn for the model', source, classes, why)
    log.info('initialised %s from %s (%s layout): %d tensors loaded, %d inflated over the tubelet, '
             '%d temporal left at init, head re-drawn: %s, skipped from the checkpoint: %s',
             name, source, report['layout'], len(report['loaded']), len(report['inflated']),
             len(report['left_at_init']), bool(report['reinitialised']), ', '.join(report['skipped']) or 'none')
    return report


def pretrained_problem(path: PathLike) -> Optional[str]:
    """None when ``path`` can initialise a model (a state dict of finite tensors), else the reason it cannot.

    The start-up check of ``TRAIN.PRETRAINED_PATH`` (``engine/preflight.py``): the tensors are memory-mapped, so
    the check reads the file once and the later :func:`load_pretrained` finds it in the page cache."""
    source = str(path)
    try:
        checkpoint = load_checkpoint_mapped(path)
        state = extract_state_dict(checkpoint, 'model', source)
        if not non_finite_allowed():
            check_finite(state, source)
    except (CheckpointError, OSError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return reason.replace(f'{source}: ', '')
    return None
