"""Putting checkpoint weights into a model: strict loading with a report of what does not fit.

Differences from the original (spec 4.7, 5): weights load strictly: missing, unexpected and differently-shaped
keys are listed in one error and the model is left untouched. The original used ``strict=False`` and silently
swapped a mismatched head for the model's own rows ``[:1000]``; to fine-tune on other classes use
``TRAIN.PRETRAINED_PATH`` (``engine.checkpoint.load_pretrained``). Here, below ``engine/``, because the timm
registration (``models/registry.py``) loads local checkpoints too; ``engine.checkpoint`` re-exports it.

Weights holding NaN or inf are refused (they evaluate at chance with exit 0 otherwise) unless the caller allows them
(``allow_non_finite``, the ``--allow-non-finite`` flag of main.py and the tools). Given the run's config, the
config stored in the checkpoint is compared with it key by key: a model key that differs (``MODEL_KEYS``: the
architecture, which strict loading cannot always see, e.g. ``USE_POSTLN``) is an error, a key of the input the model
sees (``INPUT_KEYS``: frames, sizes, sampling) a warning.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from utils.checkpoint_file import CheckpointError, PathLike, _is_state_dict, load_checkpoint_file

from .pretrained import HEAD_KEYS

_logger = logging.getLogger(__name__)

# Prefixes added by DistributedDataParallel / DataParallel and by torch.compile's OptimizedModule.
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
# Number of offending keys quoted per category in an error message (the counts are always given).
_MAX_QUOTED = 4


def _strip_wrapper_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def extract_state_dict(checkpoint: Mapping[str, Any], key: str = 'model',
                       source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """Return the state dict stored under ``key`` (``'state_dict'`` is accepted for ``'model'``; an entry
    that holds its weights under ``'model'``, like the EMA's, is unwrapped), with the ``module.`` (DDP) and
    ``_orig_mod.`` (torch.compile) prefixes removed."""
    if key in checkpoint:
        state = checkpoint[key]
    elif key == 'model' and 'state_dict' in checkpoint:
        state = checkpoint['state_dict']
    else:
        raise CheckpointError(f"{source}: no '{key}' entry (found: {', '.join(map(str, list(checkpoint)[:10]))})")
    if isinstance(state, Mapping) and not _is_state_dict(state) and _is_state_dict(state.get('model')):
        state = state['model']  # an EMA entry: {'model': state_dict, 'decay': ..., 'num_updates': ...}
    if not _is_state_dict(state):
        raise CheckpointError(f"{source}: entry '{key}' is not a state dict of tensors")
    return {_strip_wrapper_prefixes(k): v for k, v in state.items()}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, '_orig_mod', None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def _quote(items: List[str]) -> str:
    shown = ', '.join(items[:_MAX_QUOTED])
    return shown + (f', ... ({len(items) - _MAX_QUOTED} more)' if len(items) > _MAX_QUOTED else '')


def _checkpoint_and_source(path_or_dict: Union[PathLike, Mapping[str, Any]], source: Optional[str] = None) -> tuple:
    """``(checkpoint dict, name for messages)`` from a file or an already loaded checkpoint / state dict
    (``source``: the file it was loaded from)."""
    if not isinstance(path_or_dict, Mapping):
        source = os.fspath(path_or_dict)
        return load_checkpoint_file(source), source
    checkpoint = dict(path_or_dict)
    if 'model' not in checkpoint and _is_state_dict(checkpoint):
        checkpoint = {'model': checkpoint}
    return checkpoint, source or '<checkpoint dict>'


_allow_non_finite = False


def set_allow_non_finite(allow: bool) -> None:
    """Process-wide default of ``load_model_weights(allow_non_finite=None)`` (the ``--allow-non-finite`` flag)."""
    global _allow_non_finite
    _allow_non_finite = bool(allow)


def non_finite_allowed() -> bool:
    """Whether ``--allow-non-finite`` was given (the default that :func:`set_allow_non_finite` set)."""
    return _allow_non_finite


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ``CheckpointError`` naming the tensors that hold NaN or inf (counts given, a few quoted)."""
    bad = []
    for key, value in state.items():
        if value.is_floating_point() or value.is_complex():
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                bad.append(f'{key} ({int((~finite).sum())} of {value.numel()})')
    if bad:
        raise CheckpointError(f'{source}: {len(bad)} weight tensor(s) hold NaN or inf: {_quote(bad)}; the model would '
                              f'evaluate at chance (pass --allow-non-finite to load them anyway)')


# Keys of a stored config compared with the run's (see the module docstring). Keys of training only (drop rates,
# init, LRs), paths and evaluation views are not compared: they may differ by design.
MODEL_KEYS = ('MODEL.NUM_CLASSES', 'MODEL.TUBELET_SIZE', 'MODEL.FOCAL.DESIGN', 'MODEL.FOCAL.PATCH_SIZE',
              'MODEL.FOCAL.IN_CHANS', 'MODEL.FOCAL.EMBED_DIM', 'MODEL.FOCAL.DEPTHS', 'MODEL.FOCAL.MLP_RATIO',
              'MODEL.FOCAL.PATCH_NORM', 'MODEL.FOCAL.FOCAL_FACTORS', 'MODEL.FOCAL.FOCAL_LEVELS',
              'MODEL.FOCAL.FOCAL_WINDOWS', 'MODEL.FOCAL.USE_CONV_EMBED', 'MODEL.FOCAL.USE_LAYERSCALE',
              'MODEL.FOCAL.USE_POSTLN', 'MODEL.FOCAL.USE_POSTLN_IN_MODULATION', 'MODEL.FOCAL.NORMALIZE_MODULATOR')
INPUT_KEYS = ('DATA.NUM_FRAMES', 'DATA.IMG_SIZE', 'DATA.INPUT_SIZE', 'DATA.SAMPLING', 'AUG.FRAME_INTERVAL')


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split('.'):
        if not isinstance(tree, Mapping) or part not in tree:
            return _MISSING
        tree = tree[part]
    return list(tree) if isinstance(tree, tuple) else tree


_MISSING = object()


def _stored_config(checkpoint: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The checkpoint's ``config`` entry as a mapping (YAML text here, a pickled CfgNode in the original's)."""
    stored = checkpoint.get('config')
    if isinstance(stored, str):
        import yaml
        try:
            stored = yaml.safe_load(stored)
        except yaml.YAMLError:
            return None
    return stored if isinstance(stored, Mapping) else None


def config_differences(checkpoint: Mapping[str, Any], config: Any) -> Dict[str, List[str]]:
    """``{'model': [...], 'input': [...]}``: ``'KEY checkpoint A vs config B'`` for each compared key that differs
    (keys the stored config lacks, e.g. in older files, are not compared)."""
    stored = _stored_config(checkpoint)
    found: Dict[str, List[str]] = {'model': [], 'input': []}
    if stored is None or config is None:
        return found
    for kind, keys in (('model', MODEL_KEYS), ('input', INPUT_KEYS)):
        for key in keys:
            theirs, ours = _lookup(stored, key), _lookup(config, key)
            if theirs is not _MISSING and ours is not _MISSING and theirs != ours:
                found[kind].append(f'{key} checkpoint {theirs!r} vs config {ours!r}')
    return found


def check_stored_config(checkpoint: Mapping[str, Any], config: Any, source: str) -> None:
    """Model keys of the stored config that differ from ``config``: ``CheckpointError``; input keys: a warning."""
    found = config_differences(checkpoint, config)
    if found['model']:
        raise CheckpointError(f"{source}: the checkpoint's stored config describes another model than the config: "
                              + '; '.join(found['model']))
    if found['input']:
        _logger.warning("%s: the config differs from the checkpoint's stored config in the input the model sees: %s",
                        source, '; '.join(found['input']))


def load_model_weights(model: torch.nn.Module, path_or_dict: Union[PathLike, Mapping[str, Any]],
                       strict: bool = True, state_key: str = 'model', config: Any = None,
                       allow_non_finite: Optional[bool] = None, source: Optional[str] = None) -> Dict[str, Any]:
    """Load model weights for evaluation, fine-tuning or resuming.

    Args:
        model: the model (may be wrapped in DDP or compiled).
        path_or_dict: checkpoint file, or an already loaded checkpoint dict.
        strict: every model key present with the same shape and no surplus keys; otherwise raise and leave
            the model untouched. With ``strict=False`` matching keys are loaded and the rest is logged.
        state_key: checkpoint entry holding the weights (``'model'``; e.g. ``'ema'`` for EMA weights).
        config: the run's config; when given, the checkpoint's stored config must describe the same model
            (``check_stored_config``).
        allow_non_finite: load weights holding NaN / inf (default: ``set_allow_non_finite``, off).
        source: the file an already loaded ``path_or_dict`` came from, for messages.

    Returns:
        The whole checkpoint dict (optimizer, scheduler, epoch ... for the caller to restore).
    """
    checkpoint, source = _checkpoint_and_source(path_or_dict, source)
    state = extract_state_dict(checkpoint, state_key, source)
    if not (_allow_non_finite if allow_non_finite is None else allow_non_finite):
        check_finite(state, source)
    target = unwrap_model(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f'{len(missing)} missing ({_quote(missing)})')
        if unexpected:
            problems.append(f'{len(unexpected)} unexpected ({_quote(unexpected)})')
        if mismatched:
            problems.append(f'{len(mismatched)} with other shapes (' + _quote(
                [f'{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}' for k in mismatched]) + ')')
        hint = ''
        if set(mismatched) <= set(HEAD_KEYS) and not missing and not unexpected:
            hint = ' Only the head differs: to fine-tune on other classes, use TRAIN.PRETRAINED_PATH / --pretrained.'
        message = f'{source}: weights do not match the model: ' + '; '.join(problems) + '.' + hint
        if strict:
            raise CheckpointError(message)
        _logger.warning('%s Loading the %d matching tensors only (strict=False).', message,
                        len(own) - len(missing) - len(mismatched))
        state = {k: v for k, v in state.items() if k in own and k not in mismatched}
    if config is not None:  # after the shape check: a shape mismatch names the tensors, more precise than keys
        check_stored_config(checkpoint, config, source)
    target.load_state_dict(state, strict=strict)
    _logger.info('loaded %d tensors from %s', len(state), source)
    return checkpoint
