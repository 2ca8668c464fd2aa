"""A run folder belongs to one config: the settings that define a run, its default tag's hash, and the check
that refuses to continue a run with other settings.

Every key counts as a *training setting* (it changes what is trained or how it is evaluated) except:

* bookkeeping keys that say where and how a process was started (``BOOKKEEPING``: the output path, the
  checkpoint given, the mode flags, the keys the code never reads);
* ``MAY_CHANGE_ON_RESUME``: keys that change how fast or how verbosely a run goes, or how long it goes
  (``TRAIN.EPOCHS`` extends a run), but not what an update computes. They may differ when a run continues;
  the start logs each change.

The number of processes is not a setting: a run may continue on another number of processes as long as the
total batch per optimizer update (``DATA.BATCH_SIZE`` x ``TRAIN.ACCUMULATION_STEPS`` x processes) and the
learning rates after ``TRAIN.LR_SCALING`` stay the same. The comparison uses these two effective values
instead of the per-process keys.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import yaml

from engine.defaults import get_default_config
from utils.errors import ConfigError

# Where and how a process was started, or keys nothing reads: never part of a run's identity.
BOOKKEEPING = frozenset({
    'BASE', 'OUTPUT', 'TAG', 'MODEL.NAME', 'MODEL.RESUME', 'EVAL_MODE', 'THROUGHPUT_MODE', 'LOCAL_RANK',
    'AMP_OPT_LEVEL',  # mapped onto TRAIN.AMP, which is compared
    'TRAIN.AUTO_RESUME', 'TRAIN.ALLOW_START_OVER', 'TRAIN.START_EPOCH', 'DEBUG_MODE',
    'DATA.DATA_PATH', 'DATA.INTERPOLATION', 'DATA.ZIP_MODE', 'DATA.CACHE_MODE', 'MODEL.PRETRAINED', 'MODEL.SPEC',
    'TEST.CROP', 'TEST.ONLY_TEST',
})

# Keys a run may continue with other values of: speed, memory, logging and length, not what an update computes.
MAY_CHANGE_ON_RESUME = (
    'TRAIN.EPOCHS',                 # extend (or shorten) a run; the LR schedule follows the new length
    'TRAIN.FINAL_TEST',             # whether best.pth is tested at the end; the test's views stay compared
    'DATA.NUM_WORKERS', 'DATA.PIN_MEMORY', 'TEST.BATCH_SIZE',
    'TRAIN.USE_CHECKPOINT', 'TRAIN.SELECTIVE_CHECKPOINT', 'TRAIN.COMPILE', 'TRAIN.DETERMINISTIC',
    'PRINT_FREQ', 'PROGRESS_BAR', 'SAVE_FREQ', 'TENSORBOARD', 'CPU_THREADS', 'DIST_TIMEOUT_MIN',
)

# Compared through the total batch and the scaled LRs (see the module docstring), never one by one.
_LAYOUT = ('DATA.BATCH_SIZE', 'TRAIN.ACCUMULATION_STEPS', 'TRAIN.LR_SCALING', 'TRAIN.BASE_LR', 'TRAIN.WARMUP_LR',
           'TRAIN.MIN_LR')


def flatten(node: Any, prefix: str = '') -> Dict[str, Any]:
    """``{'TRAIN.EPOCHS': 30, ...}`` for a config (nested mappings become dotted keys, tuples lists)."""
    flat: Dict[str, Any] = {}
    for key, value in node.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten(value, name + '.'))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def training_settings(config: Any) -> Dict[str, Any]:
    """The keys that define a run, as the config holds them (per-process batch and LRs included)."""
    return {k: v for k, v in flatten(config).items()
            if k not in BOOKKEEPING and k not in MAY_CHANGE_ON_RESUME}


def settings_hash(config: Any, length: int = 8) -> str:
    """A short hash of :func:`training_settings`: runs that differ in any of them get different default tags."""
    text = json.dumps(training_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:length]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _effective_layout(flat: Dict[str, Any], world_size: int) -> Dict[str, Any]:
    """Total clips per optimizer update and the LRs the optimizer uses (``engine.config.apply_lr_scaling``)."""
    accumulation = max(1, int(flat['TRAIN.ACCUMULATION_STEPS']))
    total = int(flat['DATA.BATCH_SIZE']) * accumulation * world_size
    if int(flat.get('TRAIN.GLOBAL_BATCH_SIZE', 0) or 0) > 0:
        # the accumulation steps are derived from the recipe's global batch on the processes present
        # (engine.layout), after this check: the stored config holds the derived value, a new start the file's
        total = int(flat['TRAIN.GLOBAL_BATCH_SIZE'])
    factor = total / 512.0 if flat['TRAIN.LR_SCALING'] else 1.0
    return {'total batch': total, **{key: flat[key] * factor for key in ('TRAIN.BASE_LR', 'TRAIN.WARMUP_LR',
                                                                          'TRAIN.MIN_LR')}}


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else (f'{value:g}' if isinstance(value, float) else str(value))


def compare_settings(old: Any, old_world_size: int, new: Any, new_world_size: int) -> Tuple[List[str], List[str]]:
    """``(refused, allowed)``: ``KEY old -> new`` for the training settings that differ, and for the keys of
    ``MAY_CHANGE_ON_RESUME`` that differ. ``old`` is the run's stored config (LRs already scaled, as
    written by ``apply_lr_scaling``), ``new`` the config of this start before scaling."""
    old_flat, new_flat = flatten(old), flatten(new)
    refused, allowed = [], []
    for key, value in new_flat.items():
        if key in BOOKKEEPING or key in _LAYOUT or key not in old_flat:
            continue
        if not _same(old_flat[key], value):
            (allowed if key in MAY_CHANGE_ON_RESUME else refused).append(
                f'{key} {_show(old_flat[key])} -> {_show(value)}')
    old_layout = _effective_layout(old_flat, old_world_size)
    new_layout = _effective_layout(new_flat, new_world_size)
    if old_layout['total batch'] != new_layout['total batch']:
        refused.append('total batch (DATA.BATCH_SIZE x TRAIN.ACCUMULATION_STEPS x processes) '
                       f"{old_flat['DATA.BATCH_SIZE']}x{max(1, old_flat['TRAIN.ACCUMULATION_STEPS'])}x{old_world_size}"
                       f" -> {new_flat['DATA.BATCH_SIZE']}x{max(1, new_flat['TRAIN.ACCUMULATION_STEPS'])}x"
                       f"{new_world_size}")
    else:  # the same total batch: the LRs are compared as the optimizer uses them
        refused += [f'{key} {_show(old_layout[key])} -> {_show(new_layout[key])} (after TRAIN.LR_SCALING)'
                    for key in ('TRAIN.BASE_LR', 'TRAIN.WARMUP_LR', 'TRAIN.MIN_LR')
                    if not _same(old_layout[key], new_layout[key])]
    return refused, allowed


def _stored_run(folder: str) -> Tuple[Any, Optional[int]]:
    """The run's own config (``config.yaml``, read on top of today's defaults) and its number of processes
    (``environment.json``; None when that file is missing or unreadable)."""
    path = os.path.join(folder, 'config.yaml')
    try:
        with open(path, 'r', encoding='utf-8') as f:
            data = yaml.safe_load(f) or {}
        config = get_default_config()
        config.set_new_allowed(True)  # a key this version no longer has is left out of the comparison
        config.merge_from_other_cfg(type(config)(data))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise ConfigError(f'{path}: the config of the run in this folder cannot be read ({type(e).__name__}: '
                          f'{str(e).splitlines()[0] if str(e) else ""}); resume it with a readable config.yaml '
                          'or start a new run with --tag NAME') from None
    world_size = None
    try:
        with open(os.path.join(folder, 'environment.json'), 'r', encoding='utf-8') as f:
            world_size = int(json.load(f)['world_size'])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return config, world_size


def continues_run(config: Any, resumes_from_folder: bool) -> bool:
    """Whether this start trains into a folder that holds another start's run: its ``config.yaml`` is there
    and the start resumes (auto-resume of the folder's checkpoints, or an explicit ``--resume``)."""
    if config.EVAL_MODE or config.THROUGHPUT_MODE:
        return False
    if not os.path.isfile(os.path.join(config.OUTPUT, 'config.yaml')):
        return False
    return bool(config.MODEL.RESUME) or resumes_from_folder


def check_same_run(config: Any, world_size: int, resumes_from_folder: bool) -> List[str]:
    """Refuse (``ConfigError``, one line) to continue a run with other training settings than its own.

    Returns the allowed changes (``KEY old -> new``) for the start to log; [] when no run is continued."""
    if not continues_run(config, resumes_from_folder):
        return []
    stored, stored_world_size = _stored_run(config.OUTPUT)
    refused, allowed = compare_settings(stored, stored_world_size or world_size, config, world_size)
    if refused:
        raise ConfigError(
            f"{os.path.join(config.OUTPUT, 'config.yaml')}: this run was trained with other settings "
            f"({'; '.join(refused)}); continuing it would mix them and its records would not say so: start a new "
            f"run with --tag NAME (add --resume {os.path.join(config.OUTPUT, 'last.pth')} to start from its "
            f"state), or continue with the run's own settings (--cfg {os.path.join(config.OUTPUT, 'config.yaml')}); "
            f"only {', '.join(MAY_CHANGE_ON_RESUME)} may change on resume")
    return allowed
