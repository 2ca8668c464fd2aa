"""Configuration: yaml loading with ``BASE:`` inheritance, command-line overrides, checks, derived values.

The keys and their defaults are ``engine/defaults.py``. Precedence, lowest first:

1. the defaults;
2. ``--cfg FILE`` (files listed under ``BASE:`` are merged first, paths relative to the yaml's folder);
3. ``--opts KEY VALUE ...``;
4. dedicated flags (``--batch-size``, ``--resume``, ``--output`` ...), only when given;
5. derived values: ``TAG`` (when left at ``default``) and the output folder
   ``OUTPUT/<DATA.DATASET>/<MODEL.NAME>/<TAG>``; the ``PT_OUTPUT_DIR`` environment variable, if set,
   replaces the output folder entirely (as in the original).

Learning-rate scaling needs the world size and therefore happens in ``apply_lr_scaling`` at start-up.
"""
from __future__ import annotations

import difflib
import glob
import os
import re
from typing import Any, Iterable, List, Optional, Tuple

import yaml
from yacs.config import CfgNode as CN

from engine.amp import AMP_OPT_LEVELS
from engine.defaults import _C, get_default_config
from utils.errors import ConfigError  # noqa: F401  (its home is below models/ and datasets/, which raise it too)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')


def _name_key(name: str) -> str:
    """What two spellings of a config name share: the original's README wrote ``video_focalnet_base.yaml``
    for the file ``video-focalnet_base.yaml``, so case, ``-`` and ``_`` do not count."""
    return name.lower().replace('-', '_')


def shipped_configs() -> List[str]:
    """Every config file under ``configs/`` (``_base_`` parts excluded), as paths relative to the repository."""
    found = glob.glob(os.path.join(CONFIG_DIR, '**', '*.yaml'), recursive=True)
    return sorted(os.path.relpath(f, REPO_ROOT) for f in found if '_base_' not in f.split(os.sep))


def resolve_config_path(path: str) -> str:
    """The config file ``--cfg path`` names, or ``ConfigError`` with the closest existing configs.

    Looked up, in this order: the path as given (relative to the working directory); the same path relative
    to the repository (``main.py`` started from another folder); the file in that folder whose name differs
    only in ``-`` / ``_`` / case (the original's README spells ``configs/kinetics400/video_focalnet_base.yaml``).
    """
    candidates = [path]
    if not os.path.isabs(path):
        candidates.append(os.path.join(REPO_ROOT, path))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    for candidate in candidates:
        folder, name = os.path.split(candidate)
        if os.path.isdir(folder or '.'):
            same = [n for n in sorted(os.listdir(folder or '.')) if _name_key(n) == _name_key(name)]
            if len(same) == 1:
                return os.path.join(folder, same[0])
    shipped = shipped_configs()
    given = os.path.normpath(path)
    if os.path.isabs(given) and given.startswith(REPO_ROOT + os.sep):
        given = os.path.relpath(given, REPO_ROOT)
    by_key = {_name_key(s): s for s in shipped}
    # the same file name in another folder first (e.g. 'video_focalnet_tiny.yaml' alone), then similar paths
    same_name = [s for s in shipped if _name_key(os.path.basename(s)) == _name_key(os.path.basename(given))]
    similar = [by_key[k] for k in difflib.get_close_matches(_name_key(given), list(by_key), n=3, cutoff=0.5)]
    close = list(dict.fromkeys(same_name + similar))[:3]
    hint = f'; did you mean {" or ".join(close)}?' if close else f'; the shipped configs are under {CONFIG_DIR}'
    where = 'absolute path' if os.path.isabs(path) else f'relative to the working directory {os.getcwd()}'
    raise ConfigError(f'--cfg {path}: config file not found ({where}){hint}')


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, 'r') as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(yaml_error_line(path, e)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def yaml_error_line(path: str, error: yaml.YAMLError) -> str:
    """``file:line:column: what is wrong`` for a YAML syntax error (yaml's own message spans several lines)."""
    mark = getattr(error, 'problem_mark', None) or getattr(error, 'context_mark', None)
    where = f'{path}:{mark.line + 1}:{mark.column + 1}' if mark is not None else path
    problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
    context = getattr(error, 'context', None)
    return f"{where}: not valid YAML: {problem}" + (f' ({context})' if context else '')


def _base_files(path: str, data: dict) -> List[str]:
    """The ``BASE:`` entries of a config file: a file name or a list of file names ('' entries are skipped)."""
    bases = data.get('BASE', ['']) or ['']
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: BASE: expected a config file name or a list of them (paths relative to "
                          f"{os.path.dirname(path) or '.'}), got {bases!r}")
    return [b for b in bases if b]


def all_keys(config: CN, prefix: str = '') -> List[str]:
    """Every dotted key of ``config`` (``TRAIN.EPOCHS`` ...)."""
    keys = []
    for key, value in config.items():
        keys += all_keys(value, f'{prefix}{key}.') if isinstance(value, CN) else [f'{prefix}{key}']
    return keys


def unknown_key_message(key: str, config: CN) -> str:
    """``unknown config key TRAIN.EPOCH; did you mean TRAIN.EPOCHS?`` (the closest keys, when any is close)."""
    known = all_keys(config)
    close = difflib.get_close_matches(key.upper(), known, n=3, cutoff=0.75)
    if not close:  # the last part alone: a key put in the wrong section (DATA.EPOCHS)
        last = key.rsplit('.', 1)[-1].upper()
        close = [k for k in known if k.rsplit('.', 1)[-1] == last][:3]
    return f"unknown config key {key}" + (f"; did you mean {' or '.join(close)}?" if close else '')


_KINDS = ((bool, 'true or false'), (int, 'an integer'), (float, 'a number'), (str, 'a string'),
          ((list, tuple), 'a list'), (dict, 'a mapping of keys'))


def _kind(value: Any) -> str:
    for types, words in _KINDS:
        if isinstance(value, types):
            return words
    return type(value).__name__


def _value_or_key(config: CN, key: str) -> Tuple[bool, Any]:
    node: Any = config
    for part in key.split('.'):
        if not isinstance(node, CN) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _numbers_as_floats(config: CN, data: dict, prefix: str = '') -> dict:
    """``data`` with integers given for float keys turned into floats (``TRAIN.WEIGHT_DECAY: 0``), which yacs
    refuses as a type mismatch although the user wrote a number."""
    out = {}
    for key, value in data.items():
        found, default = _value_or_key(config, f'{prefix}{key}')
        if isinstance(value, dict) and found and isinstance(default, CN):
            value = _numbers_as_floats(config, value, f'{prefix}{key}.')
        elif found and isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def _type_error_message(config: CN, error: ValueError) -> str:
    """yacs's ``Type mismatch (<class 'int'> vs. <class 'str'>) with values (25 vs. three) for config key:
    TRAIN.EPOCHS`` in the user's words: ``TRAIN.EPOCHS expects an integer, got 'three'``."""
    text = str(error)
    key = text.rsplit('config key: ', 1)[-1].strip() if 'config key: ' in text else ''
    found, default = _value_or_key(config, key) if key else (False, None)
    if not found:
        return text
    given = text.split(' with values (', 1)[-1].rsplit(') for config key', 1)[0].split(' vs. ', 1)[-1]
    return f"{key} expects {_kind(default)}, got {given!r}"


def merge_config_file(config: CN, path: str, _seen: Optional[tuple] = None) -> None:
    """Merge ``path`` (after its ``BASE:`` files, recursively) into ``config``.

    Unknown keys (with the closest known ones) and values of the wrong type raise ``ConfigError`` naming the
    key and the file.
    """
    path = os.path.normpath(path)
    seen = (_seen or ()) + (os.path.abspath(path),)
    data = _read_yaml(path)
    for base in _base_files(path, data):
        base_path = os.path.join(os.path.dirname(path), base)
        if os.path.abspath(base_path) in seen:
            raise ConfigError(f"{path}: BASE file {base} includes itself")
        merge_config_file(config, base_path, seen)
    config.defrost()
    try:
        config.merge_from_other_cfg(CN(_numbers_as_floats(config, data)))
    except KeyError as e:
        key = str(e).strip("'\"").replace('Non-existent config key: ', '')
        raise ConfigError(f"{path}: {unknown_key_message(key, config)}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: {_type_error_message(config, e)}") from None


def merge_opts(config: CN, opts: Optional[Iterable[str]]) -> None:
    """Merge ``KEY VALUE`` pairs from the command line, one pair at a time so that an error names its key."""
    opts = list(opts or [])
    if not opts:
        return
    if len(opts) % 2:
        raise ConfigError(f"--opts: expected KEY VALUE pairs, got an odd number of items: {opts}")
    config.defrost()
    for key, value in zip(opts[0::2], opts[1::2]):
        found, default = _value_or_key(config, key)
        if not found or isinstance(default, CN):
            raise ConfigError(f"--opts: {unknown_key_message(key, config)}")
        if isinstance(default, float) and re.fullmatch(r'[+-]?\d+', str(value).strip()):
            value = str(float(int(value)))  # an integer for a float key is the number the user meant
        try:
            config.merge_from_list([key, value])
        except (KeyError, AssertionError) as e:
            raise ConfigError(f"--opts: {str(e).strip(chr(39))}") from None
        except ValueError as e:
            raise ConfigError(f"--opts: {_type_error_message(config, e)}") from None


def _flag(args: Any, name: str) -> Any:
    return getattr(args, name, None) if args is not None else None


def update_config(config: CN, args: Any) -> CN:
    """Apply ``--cfg``, ``--opts`` and the dedicated flags of ``args`` (an argparse namespace)."""
    config.defrost()
    if _flag(args, 'cfg'):
        merge_config_file(config, resolve_config_path(args.cfg))
    merge_opts(config, _flag(args, 'opts'))

    if _flag(args, 'batch_size') is not None:
        config.DATA.BATCH_SIZE = int(args.batch_size)
    if _flag(args, 'resume'):
        config.MODEL.RESUME = args.resume
    if _flag(args, 'pretrained') is not None:  # --pretrained '' starts from scratch
        config.TRAIN.PRETRAINED_PATH = args.pretrained
    if _flag(args, 'accumulation_steps') is not None:
        config.TRAIN.ACCUMULATION_STEPS = int(args.accumulation_steps)
    elif config.TRAIN.GLOBAL_BATCH_SIZE and 'TRAIN.ACCUMULATION_STEPS' not in list(_flag(args, 'opts') or [])[0::2]:
        # derived from the global batch at start-up (engine/layout.py): a file's value, e.g. the one a run's
        # config.yaml stores for its own layout, is not a request; one on the command line must agree with it
        config.TRAIN.ACCUMULATION_STEPS = 0
    if _flag(args, 'use_checkpoint'):
        config.TRAIN.USE_CHECKPOINT = True
    if _flag(args, 'amp_opt_level'):
        config.AMP_OPT_LEVEL = args.amp_opt_level
    if _flag(args, 'output'):
        config.OUTPUT = args.output
    if _flag(args, 'tag'):
        config.TAG = args.tag
    if _flag(args, 'eval'):
        config.EVAL_MODE = True
    if _flag(args, 'throughput'):
        config.THROUGHPUT_MODE = True
    if _flag(args, 'seed') is not None:
        config.SEED = int(args.seed)
    local_rank = _flag(args, 'local_rank')
    if local_rank is None:
        local_rank = os.environ.get('LOCAL_RANK')
    if local_rank is not None:
        config.LOCAL_RANK = int(local_rank)
    output_chosen = bool(_flag(args, 'output') or _flag(args, 'tag') or os.environ.get('PT_OUTPUT_DIR')
                         or config.OUTPUT != _C.OUTPUT or config.TAG != _C.TAG)

    finalize_config(config)
    if config.EVAL_MODE and config.MODEL.RESUME:
        config.defrost()
        config.OUTPUT = eval_output_dir(config, output_chosen)
        config.freeze()
    return config


def eval_output_dir(config: CN, output_chosen: bool) -> str:
    """Where ``--eval`` writes: ``<run folder>/eval/<checkpoint stem>_<clips>x<crops>``, never the run folder.

    The run folder is the one ``--output`` / ``--tag`` / ``OUTPUT`` / ``PT_OUTPUT_DIR`` name when one of them is
    given (``output_chosen``); otherwise the folder of the checkpoint when that is a run folder (it holds a
    ``config.yaml``, as every training run's folder does), else the default run folder of the config. So
    evaluating ``RUN/best.pth`` lands in ``RUN/eval/best_4x3`` and leaves the training's own
    eval_results.json, predictions.csv, config.yaml, environment.json and log untouched.
    """
    run_folder = config.OUTPUT
    checkpoint_folder = os.path.dirname(os.path.abspath(config.MODEL.RESUME))
    if not output_chosen and os.path.isfile(os.path.join(checkpoint_folder, 'config.yaml')):
        run_folder = os.path.dirname(config.MODEL.RESUME) or '.'
    stem = os.path.splitext(os.path.basename(config.MODEL.RESUME.rstrip('/' + os.sep)))[0] or 'checkpoint'
    return os.path.join(run_folder, 'eval', f'{stem}_{config.TEST.NUM_CLIP}x{config.TEST.NUM_CROP}')


def finalize_config(config: CN) -> CN:
    """Check values and derive TAG / OUTPUT. Called once after all overrides."""
    config.defrost()
    if config.AMP_OPT_LEVEL:
        _check_choice('AMP_OPT_LEVEL', config.AMP_OPT_LEVEL, tuple(sorted(AMP_OPT_LEVELS)))
        config.TRAIN.AMP = AMP_OPT_LEVELS[config.AMP_OPT_LEVEL]
    for key, value, choices in _choice_lists(config):
        _check_choice(key, value, choices)
    num_classes_from_label_list(config)  # before the range checks: a count of 0 means 'from the label list'
    check_value_ranges(config)
    # The original's defaults disagree (101 vs 1000); once a config sets either, they must agree.
    defaults = (_C.DATA.NUM_CLASSES, _C.MODEL.NUM_CLASSES)
    if (config.DATA.NUM_CLASSES, config.MODEL.NUM_CLASSES) != defaults and \
            config.DATA.NUM_CLASSES != config.MODEL.NUM_CLASSES:
        raise ConfigError(f"DATA.NUM_CLASSES ({config.DATA.NUM_CLASSES}) and MODEL.NUM_CLASSES "
                          f"({config.MODEL.NUM_CLASSES}) must be equal")
    if config.DATA.NUM_FRAMES % config.MODEL.TUBELET_SIZE:
        raise ConfigError(f"DATA.NUM_FRAMES ({config.DATA.NUM_FRAMES}) must be a multiple of "
                          f"MODEL.TUBELET_SIZE ({config.MODEL.TUBELET_SIZE})")
    if config.TAG == 'default':
        config.TAG = default_tag(config)
    config.OUTPUT = os.path.join(config.OUTPUT, config.DATA.DATASET, config.MODEL.NAME or config.MODEL.TYPE,
                                 config.TAG)
    if os.environ.get('PT_OUTPUT_DIR'):
        config.OUTPUT = os.environ['PT_OUTPUT_DIR']
    config.freeze()
    return config


def default_tag(config: CN) -> str:
    """The run folder's name when no ``--tag`` is given: the readable part (LR, epochs, optimizer, frames) and a
    short hash of every training setting as written (``engine.run_identity.settings_hash``), so runs that
    differ in any setting (weight decay, smoothing, data lists ...) land in different folders."""
    from engine.run_identity import settings_hash
    return (f"LR_{config.TRAIN.BASE_LR}_EP_{config.TRAIN.EPOCHS}_OPT_{config.TRAIN.OPTIMIZER.NAME}"
            f"_FRAMES_{config.DATA.NUM_FRAMES}_{settings_hash(config)}")


def num_classes_from_label_list(config: CN) -> None:
    """``MODEL.NUM_CLASSES`` / ``DATA.NUM_CLASSES`` left at 0: the number of classes of ``DATA.LABEL_LIST``.

    A folder prepared by ``python -m datasets.prepare folder`` brings its ``labels.csv``, so the
    fine-tuning configs leave the class count at 0 and it follows the data. With a count set, a label
    list that exists and names another number of classes is an error (reports would name the wrong
    classes, or a label would fall outside the head). A missing list is only an error when the count
    has to come from it. DATA.LABEL_LIST is read as it stands: call this after paths are resolved.
    """
    model, data = config.MODEL.NUM_CLASSES, config.DATA.NUM_CLASSES
    path = config.DATA.LABEL_LIST
    if (model, data) == (_C.MODEL.NUM_CLASSES, _C.DATA.NUM_CLASSES):
        return   # neither set: the defaults (which disagree with each other) are left to the check below
    if model != 0 and data != 0 and not (path and os.path.isfile(path)):
        return
    if model == 0 or data == 0:
        if not path:
            raise ConfigError("MODEL.NUM_CLASSES is 0 (take it from the label list) but DATA.LABEL_LIST is empty")
        if not os.path.isfile(path):
            raise ConfigError(f"MODEL.NUM_CLASSES is 0 (take it from the label list) but DATA.LABEL_LIST "
                              f"{path} is not found")
    from datasets.annotations import AnnotationError, read_label_list
    try:
        count = len(read_label_list(path))
    except AnnotationError as err:
        if 0 in (model, data):
            raise ConfigError(f"DATA.LABEL_LIST: {err}") from None
        return   # a count is set: a list that cannot be read is the business of whoever reads it (or makes it)
    set_here = []
    for key, value, default in (('MODEL.NUM_CLASSES', model, _C.MODEL.NUM_CLASSES),
                                ('DATA.NUM_CLASSES', data, _C.DATA.NUM_CLASSES)):
        # left at 0, or (DATA's) left at the original's default while the other one is 0
        if value == 0 or (value == default and 0 in (model, data)):
            set_here.append(key)
        elif value != count:
            raise ConfigError(f"{key} is {value} but DATA.LABEL_LIST {path} names {count} classes; set {key} "
                              f"to {count} (or 0 to take it from the list) or use the list of the data")
    config.MODEL.NUM_CLASSES = count if 'MODEL.NUM_CLASSES' in set_here else model
    config.DATA.NUM_CLASSES = count if 'DATA.NUM_CLASSES' in set_here else data
# (key, the flag that also sets it, low, high, what the value is): the ranges in which a value means something.
# Bounds are inclusive; None is unbounded. A value outside fails at start-up instead of as a ZeroDivisionError
# after the first step (PRINT_FREQ 0), a DataLoader traceback (BATCH_SIZE 0, NUM_WORKERS -1) or not at all
# (ACCUMULATION_STEPS -1, MAX_UNREADABLE_FRACTION 2.0 were accepted).
_COUNT, _NON_NEGATIVE, _FRACTION, _RATE = 'an integer', 'a number', 'a fraction', 'a rate'
# Upper bounds where a larger value only allocates memory until the machine gives up (an input of 100000 px
# asks for hundreds of GB): 4.5x the published 224 px and 32x their 32 frames. Seeds: each rank seeds numpy
# with SEED + rank, which must stay below 2**32.
MAX_SIZE, MAX_FRAMES, MAX_SEED = 1024, 1024, 2 ** 31 - 1
_VALUE_RANGES = (
    ('DATA.BATCH_SIZE', '--batch-size', 1, None, _COUNT),
    ('DATA.NUM_FRAMES', None, 1, MAX_FRAMES, _COUNT),
    ('DATA.NUM_CLASSES', None, 1, None, _COUNT),
    ('DATA.IMG_SIZE', None, 1, MAX_SIZE, _COUNT),
    ('DATA.INPUT_SIZE', None, 1, MAX_SIZE, _COUNT),
    ('DATA.NUM_WORKERS', None, 0, None, _COUNT),
    ('DATA.MAX_UNREADABLE_FRACTION', None, 0.0, 1.0, _FRACTION),
    ('MODEL.NUM_CLASSES', None, 1, None, _COUNT),
    ('MODEL.TUBELET_SIZE', None, 1, None, _COUNT),
    ('MODEL.DROP_RATE', None, 0.0, 1.0, _RATE),
    ('MODEL.HEAD_DROP_RATE', None, 0.0, 1.0, _RATE),
    ('MODEL.DROP_PATH_RATE', None, 0.0, 1.0, _RATE),
    ('MODEL.LABEL_SMOOTHING', None, 0.0, 1.0, _FRACTION),
    ('MODEL.FOCAL.PATCH_SIZE', None, 1, None, _COUNT),
    ('MODEL.FOCAL.IN_CHANS', None, 1, None, _COUNT),
    ('MODEL.FOCAL.EMBED_DIM', None, 1, None, _COUNT),
    ('TRAIN.EPOCHS', None, 1, None, _COUNT),
    ('TRAIN.WARMUP_EPOCHS', None, 0, None, _NON_NEGATIVE),
    ('TRAIN.ACCUMULATION_STEPS', '--accumulation-steps', 0, None, _COUNT),
    ('TRAIN.GLOBAL_BATCH_SIZE', None, 0, None, _COUNT),
    ('TRAIN.WEIGHT_DECAY', None, 0.0, None, _NON_NEGATIVE),
    ('TRAIN.BASE_LR', None, 0.0, None, _NON_NEGATIVE),
    ('TRAIN.WARMUP_LR', None, 0.0, None, _NON_NEGATIVE),
    ('TRAIN.MIN_LR', None, 0.0, None, _NON_NEGATIVE),
    ('TRAIN.EMA_DECAY', None, 0.0, 1.0, _FRACTION),
    ('AUG.COLOR_JITTER', None, 0.0, 1.0, _FRACTION),
    ('AUG.GRAY_SCALE', None, 0.0, 1.0, _FRACTION),
    ('AUG.FLIP_RATIO', None, 0.0, 1.0, _FRACTION),
    ('AUG.REPROB', None, 0.0, 1.0, _FRACTION),
    ('AUG.MIXUP', None, 0.0, None, _NON_NEGATIVE),
    ('AUG.CUTMIX', None, 0.0, None, _NON_NEGATIVE),
    ('AUG.MIXUP_PROB', None, 0.0, 1.0, _FRACTION),
    ('AUG.MIXUP_SWITCH_PROB', None, 0.0, 1.0, _FRACTION),
    ('AUG.LABEL_SMOOTH', None, 0.0, 1.0, _FRACTION),
    ('AUG.FRAME_INTERVAL', None, 1, None, _COUNT),
    ('AUG.REPEATED_AUG', None, 1, None, _COUNT),
    ('TEST.NUM_CLIP', None, 1, None, _COUNT),
    ('TEST.FINAL_NUM_CLIP', None, 1, None, _COUNT),
    ('TEST.BATCH_SIZE', None, 1, None, _COUNT),
    ('SAVE_FREQ', None, 1, None, _COUNT),
    ('PRINT_FREQ', None, 1, None, _COUNT),
    ('DIST_TIMEOUT_MIN', None, 0.01, None, _NON_NEGATIVE),
    ('SEED', '--seed', 0, MAX_SEED, _COUNT),
    ('CPU_THREADS', None, 0, None, _COUNT),
)


def _config_value(config: CN, key: str) -> Any:
    value = config
    for part in key.split('.'):
        value = value[part]
    return value


def check_value_ranges(config: CN) -> None:
    """Every numeric key lies in its range (``_VALUE_RANGES``; the crop counts are checked as choices).

    Raises:
        ConfigError: one line naming the key (and its flag), the value and the allowed range.
    """
    for key, flag, low, high, kind in _VALUE_RANGES:
        value = _config_value(config, key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and value == value and (low is None or value >= low) and (high is None or value <= high):
            continue
        if high is None:
            allowed = f'{kind} >= {low}'
        else:
            allowed = f'{kind} in [{low}, {high}]'
        name = f'{key} ({flag})' if flag else key
        raise ConfigError(f"{name}: expected {allowed}, got {value!r}")
    clip = config.TRAIN.CLIP_GRAD
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip >= 0):
        raise ConfigError(f"TRAIN.CLIP_GRAD: expected a number >= 0 (0 or None: no clipping), got {clip!r}")
    stages = len(config.MODEL.FOCAL.DEPTHS)
    # a focal modulation needs at least one level (its first kernel); every per-stage list has one entry a stage
    for key, low in (('MODEL.FOCAL.DEPTHS', 1), ('MODEL.FOCAL.FOCAL_LEVELS', 1), ('MODEL.FOCAL.FOCAL_WINDOWS', 1),
                     ('MODEL.FOCAL.FOCAL_FACTORS', 0)):
        values = _config_value(config, key)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values) or not values:
            raise ConfigError(f"{key}: expected a list of integers >= {low}, got {list(values)!r}")
        if len(values) != stages:
            raise ConfigError(f"{key}: expected one value per stage ({stages}, as MODEL.FOCAL.DEPTHS), "
                              f"got {list(values)!r}")


def _choice_lists(config: CN) -> List[Tuple[str, Any, tuple]]:
    """``(key, value, allowed values)``: each list is the one of the component that uses the key.

    Imported here, at call time, because several of those components raise ``ConfigError`` themselves."""
    from datasets.decoders import BACKENDS
    from datasets.mixup import MIXUP_MODES
    from datasets.sampling import SAMPLING_MODES
    from datasets.transforms import ERASE_MODES
    from datasets.video_dataset import ON_UNREADABLE
    from engine.amp import AMP_MODES
    from engine.checkpoint.weights import PRETRAINED_HEAD_MODES
    from engine.evaluator import SCORE_AGGREGATIONS
    from engine.lr_schedule import SCHEDULES
    from engine.optim import OPTIMIZERS
    from engine.weight_init import WEIGHT_INITS
    from models import MODEL_TYPES
    from models.architectures import DESIGNS
    from models.layers import DROP_PATH_MODES
    eval_crops = (1, 3)  # datasets.transforms.EvalTransform's num_crop (it names no list of its own)
    return [
        ('MODEL.TYPE', config.MODEL.TYPE, MODEL_TYPES),
        ('MODEL.FOCAL.DESIGN', config.MODEL.FOCAL.DESIGN, DESIGNS),
        ('MODEL.INIT', config.MODEL.INIT, WEIGHT_INITS),
        ('MODEL.DROP_PATH_MODE', config.MODEL.DROP_PATH_MODE, DROP_PATH_MODES),
        ('TRAIN.AMP', config.TRAIN.AMP, AMP_MODES),
        ('TRAIN.PRETRAINED_HEAD', config.TRAIN.PRETRAINED_HEAD, PRETRAINED_HEAD_MODES),
        ('TRAIN.OPTIMIZER.NAME', config.TRAIN.OPTIMIZER.NAME.lower(), OPTIMIZERS),
        ('TRAIN.LR_SCHEDULER.NAME', config.TRAIN.LR_SCHEDULER.NAME, SCHEDULES),
        ('DATA.DECODER', config.DATA.DECODER, ('auto',) + tuple(BACKENDS)),
        ('DATA.SAMPLING', config.DATA.SAMPLING, SAMPLING_MODES),
        ('AUG.MIXUP_MODE', config.AUG.MIXUP_MODE, MIXUP_MODES),
        ('AUG.REMODE', config.AUG.REMODE, ERASE_MODES),
        ('TEST.NUM_CROP', config.TEST.NUM_CROP, eval_crops),
        ('TEST.FINAL_NUM_CROP', config.TEST.FINAL_NUM_CROP, eval_crops),
        ('TEST.ON_UNREADABLE', config.TEST.ON_UNREADABLE, ON_UNREADABLE),
        ('TEST.SCORE_AGG', config.TEST.SCORE_AGG, SCORE_AGGREGATIONS),
    ]


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")


def get_config(args: Any = None) -> CN:
    """Defaults, then ``args`` (``--cfg``, ``--opts`` and flags), checked and frozen."""
    config = get_default_config()
    if args is None:
        finalize_config(config)
        return config
    return update_config(config, args)


def load_config(cfg_file: Optional[str] = None, opts: Optional[Iterable[str]] = None, **flags: Any) -> CN:
    """Convenience for tools and tests: ``load_config('configs/x.yaml', ['DATA.BATCH_SIZE', '2'])``."""
    import argparse
    ns = argparse.Namespace(cfg=cfg_file, opts=list(opts or []), **flags)
    return get_config(ns)


def apply_lr_scaling(config: CN, world_size: int) -> CN:
    """The original's linear scaling rule: LR x (BATCH_SIZE x world_size / 512) x ACCUMULATION_STEPS.

    Applied to BASE_LR, WARMUP_LR and MIN_LR alike; switched off by TRAIN.LR_SCALING False. The result
    says ``LR_SCALING: False``: its LRs are final, so the stored config (``OUTPUT/config.yaml``, a
    checkpoint's) trains with the same LRs when it is used as ``--cfg`` again, whatever the world size.
    """
    if not config.TRAIN.LR_SCALING:
        return config
    factor = config.DATA.BATCH_SIZE * world_size / 512.0
    if config.TRAIN.ACCUMULATION_STEPS > 1:
        factor *= config.TRAIN.ACCUMULATION_STEPS
    config.defrost()
    config.TRAIN.BASE_LR = config.TRAIN.BASE_LR * factor
    config.TRAIN.WARMUP_LR = config.TRAIN.WARMUP_LR * factor
    config.TRAIN.MIN_LR = config.TRAIN.MIN_LR * factor
    config.TRAIN.LR_SCALING = False
    config.freeze()
    return config


def keys_the_original_ignored(config: CN) -> List[str]:
    """Settings of ``config`` that change training here although the original code ignored the key.

    An original yaml loads unchanged, but e.g. its ``WEIGHT_DECAY: 1e-4`` and ``MIXUP_PROB: 0.5`` (no-ops
    there) and the defaults for RandAugment and random erasing (never applied there) now act. The
    shipped configs set them to what the published models were trained with, so this list is empty for
    them; the training log prints it otherwise.
    """
    aug, found = config.AUG, []
    if config.TRAIN.WEIGHT_DECAY > 0:
        found.append(f'TRAIN.WEIGHT_DECAY {config.TRAIN.WEIGHT_DECAY:g} (the original decayed nothing)')
    if str(aug.AUTO_AUGMENT).lower() not in ('', 'none'):
        found.append(f'AUG.AUTO_AUGMENT {aug.AUTO_AUGMENT} (the original applied no RandAugment)')
    if aug.REPROB > 0:
        found.append(f'AUG.REPROB {aug.REPROB:g} (the original applied no random erasing)')
    if (aug.MIXUP > 0 or aug.CUTMIX > 0) and aug.MIXUP_PROB < 1:
        found.append(f'AUG.MIXUP_PROB {aug.MIXUP_PROB:g} (the original mixed every batch)')
    return found


def config_to_yaml(config: CN) -> str:
    """The merged config as YAML text (what checkpoints and OUTPUT/config.yaml store), self-contained so that
    it can be given back as ``--cfg``: its ``BASE:`` files are already merged (the entry is emptied: they would
    be looked for beside the copy), and ``OUTPUT`` is the root again when it ends in the derived
    ``<DATA.DATASET>/<MODEL.NAME>/<TAG>`` (the stored TAG rebuilds the same run folder)."""
    config = config.clone()
    config.defrost()
    config.BASE = ['']
    derived = os.path.join(config.DATA.DATASET, config.MODEL.NAME or config.MODEL.TYPE, config.TAG)
    output = os.path.normpath(config.OUTPUT)
    if output == derived:
        config.OUTPUT = '.'
    elif output.endswith(os.sep + derived):
        config.OUTPUT = output[:-len(derived) - 1]
    return config.dump()


def config_from_yaml_text(text: str) -> CN:
    """Rebuild a config from YAML text stored in a checkpoint, on top of today's defaults."""
    config = get_default_config()
    data = yaml.safe_load(text) or {}
    config.defrost()
    config.set_new_allowed(True)  # tolerate keys of newer/older versions when only reading a stored config
    config.merge_from_other_cfg(CN(data))
    config.set_new_allowed(False)
    return config
