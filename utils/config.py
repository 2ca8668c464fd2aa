"""Configuration: yacs defaults, yaml loading with ``BASE:`` inheritance, command-line overrides.

Every key of the original ``config.py`` exists here with the original default, so the published yaml
files load unchanged. Keys that the original declared but never read are wired up (see the comments
marked "was dead"). Keys added by this project are marked "new". Precedence, lowest first:

1. the defaults below;
2. ``--cfg FILE`` (files listed under ``BASE:`` are merged first, paths relative to the yaml's folder);
3. ``--opts KEY VALUE ...``;
4. dedicated flags (``--batch-size``, ``--resume``, ``--output`` ...), only when given;
5. derived values: ``TAG`` (when left at ``default``) and the output folder
   ``OUTPUT/<DATA.DATASET>/<MODEL.NAME>/<TAG>``; the ``PT_OUTPUT_DIR`` environment variable, if set,
   replaces the output folder entirely (as in the original).

Learning-rate scaling needs the world size and therefore happens in ``apply_lr_scaling`` at start-up.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, List, Optional

import yaml
from yacs.config import CfgNode as CN


class ConfigError(ValueError):
    """A config file, key or value is not what is expected."""


_C = CN()

# Base config files (merged before the file that lists them).
_C.BASE = ['']

# -----------------------------------------------------------------------------
# Data settings
# -----------------------------------------------------------------------------
_C.DATA = CN()
_C.DATA.ROOT = '/PATH/TO/videos'          # joined in front of every annotation path ('' = use paths as-is)
_C.DATA.TRAIN_FILE = '/PATH/TO/train.txt'
_C.DATA.VAL_FILE = '/PATH/TO/val.txt'
_C.DATA.TEST_FILE = ''                    # new: final test of best.pth on this held-out file ('' = VAL_FILE)
_C.DATA.NUM_FRAMES = 32                   # frames per clip (T)
_C.DATA.NUM_CLASSES = 101                 # must equal MODEL.NUM_CLASSES (checked at start-up)
_C.DATA.LABEL_LIST = 'labels/ucf_101_labels.csv'   # 'id,name' csv; now used for predictions/reports
_C.DATA.BATCH_SIZE = 128                  # training clips per process
_C.DATA.DATA_PATH = ''                    # unused (kept for compatibility with the original)
_C.DATA.DATASET = 'imagenet'              # dataset name, used in the output path; 'toy' generates data
_C.DATA.IMG_SIZE = 224                    # model input size
_C.DATA.INPUT_SIZE = 224                  # crop size of the data pipeline
_C.DATA.INTERPOLATION = 'bicubic'         # unused (the original's resizes are bilinear; so are ours)
_C.DATA.ZIP_MODE = False                  # unused
_C.DATA.CACHE_MODE = 'part'               # unused
_C.DATA.PIN_MEMORY = True                 # was dead (always True): now honoured
_C.DATA.NUM_WORKERS = 8                   # was dead (always 16): now honoured
# new: decoding backend: auto (decord if importable, else PyAV) | decord | pyav
_C.DATA.DECODER = 'auto'
# new: frame sampling: segment (the original's TSN-style rule) | dense (T frames at stride FRAME_INTERVAL)
_C.DATA.SAMPLING = 'segment'
# new: training stops with a summary once more than this fraction of drawn samples was unreadable
_C.DATA.MAX_UNREADABLE_FRACTION = 0.01

# -----------------------------------------------------------------------------
# Model settings
# -----------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.TYPE = 'focal'                   # videofocalnet[_tiny|_small|_base] or video_focalnet[_*]
_C.MODEL.NAME = ''                        # used in logs and the output path
_C.MODEL.RESUME = ''                      # checkpoint to evaluate / fine-tune / resume from
_C.MODEL.NUM_CLASSES = 1000
_C.MODEL.DROP_RATE = 0.0                  # was dead: now the dropout after the stem, in MLPs and projections
_C.MODEL.HEAD_DROP_RATE = 0.0             # new: dropout before the classifier (the original had none)
_C.MODEL.DROP_PATH_RATE = 0.1
_C.MODEL.LABEL_SMOOTHING = 0.1            # used when mixup/cutmix are off
_C.MODEL.PRETRAINED = False               # the original downloaded from empty URLs; use TRAIN.PRETRAINED_PATH
_C.MODEL.TUBELET_SIZE = 1
# new: initialisation of the Linear layers: original (trunc-normal std 0.02, as the original) | xavier
# (xavier-uniform; tiny models trained from scratch, e.g. the toy config, learn far faster with it)
_C.MODEL.INIT = 'original'
# new: how DropPath draws its mask: 'video' (one draw per clip) or 'frame' (the original: per frame)
_C.MODEL.DROP_PATH_MODE = 'video'
_C.MODEL.SPEC = CN(new_allowed=True)      # unused

_C.MODEL.FOCAL = CN()
_C.MODEL.FOCAL.PATCH_SIZE = 4             # was dead: now forwarded
_C.MODEL.FOCAL.IN_CHANS = 3               # was dead: now forwarded
_C.MODEL.FOCAL.EMBED_DIM = 96             # was dead: now decides the width (TYPE only names the family)
_C.MODEL.FOCAL.DEPTHS = [2, 2, 6, 2]      # was dead: now decides the depth
_C.MODEL.FOCAL.MLP_RATIO = 4.0            # was dead: now forwarded
_C.MODEL.FOCAL.PATCH_NORM = True          # was dead: now forwarded
_C.MODEL.FOCAL.FOCAL_FACTORS = [2, 2, 2, 2]   # kernel of level l = FOCAL_FACTOR * l + FOCAL_WINDOW
_C.MODEL.FOCAL.FOCAL_LEVELS = [2, 2, 2, 2]
_C.MODEL.FOCAL.FOCAL_WINDOWS = [3, 3, 3, 3]
_C.MODEL.FOCAL.USE_CONV_EMBED = False
_C.MODEL.FOCAL.USE_LAYERSCALE = False
_C.MODEL.FOCAL.USE_POSTLN = False
_C.MODEL.FOCAL.USE_POSTLN_IN_MODULATION = False
_C.MODEL.FOCAL.NORMALIZE_MODULATOR = False
_C.MODEL.FOCAL.LAYERSCALE_VALUE = 1e-4    # new: initial value of layerscale (the original's constructor default)

# -----------------------------------------------------------------------------
# Training settings
# -----------------------------------------------------------------------------
_C.TRAIN = CN()
_C.TRAIN.START_EPOCH = 0
_C.TRAIN.EPOCHS = 300
_C.TRAIN.WARMUP_EPOCHS = 20
_C.TRAIN.WEIGHT_DECAY = 0.05              # now applied (the original silently used 0 for every parameter)
_C.TRAIN.BASE_LR = 5e-4
_C.TRAIN.WARMUP_LR = 5e-7
_C.TRAIN.MIN_LR = 5e-6
_C.TRAIN.CLIP_GRAD = 5.0                  # 0 or None: no clipping
_C.TRAIN.AUTO_RESUME = True               # resume from OUTPUT/last.pth; never overrides --resume, never in --eval
_C.TRAIN.ACCUMULATION_STEPS = 0
_C.TRAIN.USE_CHECKPOINT = False           # was dead: now gradient checkpointing of every block
# new: keep only conv/matmul outputs for backward and recompute element-wise ops (same results, ~40% less
# activation memory, a few % more time); ignored when USE_CHECKPOINT recomputes whole blocks
_C.TRAIN.SELECTIVE_CHECKPOINT = True
_C.TRAIN.PRETRAINED_PATH = ''             # ImageNet FocalNet-SRF (microsoft or timm layout) or a video checkpoint
# new: scale BASE_LR/WARMUP_LR/MIN_LR by total batch / 512 (and by ACCUMULATION_STEPS), as the original did
_C.TRAIN.LR_SCALING = True
# new: mixed precision: none | fp16 (autocast + GradScaler) | bf16.  AMP_OPT_LEVEL O1/O2 map to fp16, O0 to none.
_C.TRAIN.AMP = 'none'
_C.TRAIN.COMPILE = False                  # new: torch.compile the model
_C.TRAIN.EMA = False                      # new: keep an exponential moving average of the weights
_C.TRAIN.EMA_DECAY = 0.9998
_C.TRAIN.EMA_EVAL = True                  # new: also validate the EMA weights each epoch
_C.TRAIN.DETERMINISTIC = False            # new: deterministic algorithms, cudnn.benchmark off
_C.TRAIN.FINAL_TEST = True                # new: after training, test best.pth with TEST.FINAL_NUM_CLIP x FINAL_NUM_CROP

_C.TRAIN.LR_SCHEDULER = CN()
_C.TRAIN.LR_SCHEDULER.NAME = 'cosine'     # cosine | linear | step
_C.TRAIN.LR_SCHEDULER.DECAY_EPOCHS = 30
_C.TRAIN.LR_SCHEDULER.DECAY_RATE = 0.1
# new: True reproduces timm 0.5.4 (cosine counted from step 0, so the LR jumps down when warm-up ends);
# False (default) starts the cosine at the end of warm-up, so the LR is continuous.
_C.TRAIN.LR_SCHEDULER.LEGACY_COSINE = False

_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.NAME = 'adamw'         # adamw | sgd
_C.TRAIN.OPTIMIZER.EPS = 1e-8
_C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9
_C.TRAIN.OPTIMIZER.NESTEROV = True        # new: the original always used Nesterov SGD

# -----------------------------------------------------------------------------
# Augmentation settings
# -----------------------------------------------------------------------------
_C.AUG = CN()
_C.AUG.COLOR_JITTER = 0.4                 # probability of applying colour jitter (as in the original)
_C.AUG.COLOR_JITTER_PER_FRAME = False     # new: True = the original's independent jitter per frame
_C.AUG.AUTO_AUGMENT = 'rand-m9-mstd0.5-inc1'   # was dead: RandAugment, same ops on every frame; 'none' = off
_C.AUG.REPROB = 0.25                      # was dead: random erasing probability (0 = off)
_C.AUG.REMODE = 'pixel'                   # was dead
_C.AUG.RECOUNT = 1                        # was dead
_C.AUG.MIXUP = 0.8
_C.AUG.CUTMIX = 1.0
_C.AUG.CUTMIX_MINMAX = None               # was dead
_C.AUG.MIXUP_PROB = 1.0                   # was dead (always 1): now the probability of mixing a batch
_C.AUG.MIXUP_SWITCH_PROB = 0.5
_C.AUG.MIXUP_MODE = 'batch'               # was dead: batch | pair | elem
_C.AUG.GRAY_SCALE = 0.2
_C.AUG.FLIP_RATIO = 0.5
_C.AUG.FRAME_INTERVAL = 2                 # segment sampling: frames reserved at the end; dense: the stride
_C.AUG.LABEL_SMOOTH = 0.1                 # smoothing of mixup/cutmix targets
_C.AUG.REPEATED_AUG = 1                   # new: augmented views per decoded video in training

# -----------------------------------------------------------------------------
# Testing settings
# -----------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.CROP = True                       # unused
_C.TEST.NUM_CLIP = 1
_C.TEST.NUM_CROP = 1                      # 1 or 3
_C.TEST.ONLY_TEST = False                 # unused
_C.TEST.BATCH_SIZE = 2                    # new: videos per evaluation batch (the original hard-coded 2)
_C.TEST.RANDOM_CLIPS = False              # new: True = the original's random multi-clip sampling
_C.TEST.ON_UNREADABLE = 'skip'            # new: skip (report path and count) | error (stop)
_C.TEST.SCORE_AGG = 'softmax'             # new: softmax (sum of probabilities, the original) | logits (mean)
_C.TEST.FINAL_NUM_CLIP = 4                # new: views of the final test after training
_C.TEST.FINAL_NUM_CROP = 3

# -----------------------------------------------------------------------------
# Misc
# -----------------------------------------------------------------------------
_C.AMP_OPT_LEVEL = ''                     # O0 | O1 | O2: mapped onto TRAIN.AMP (apex is not used)
_C.OUTPUT = 'output'
_C.TAG = 'default'
_C.SAVE_FREQ = 1
_C.PRINT_FREQ = 100
_C.SEED = 0
_C.EVAL_MODE = False
_C.THROUGHPUT_MODE = False
_C.DEBUG_MODE = False                     # unused
_C.LOCAL_RANK = 0
_C.TENSORBOARD = True                     # new: write TensorBoard scalars to OUTPUT/tensorboard


AMP_OPT_LEVELS = {'O0': 'none', 'O1': 'fp16', 'O2': 'fp16'}
AMP_MODES = ('none', 'fp16', 'bf16')


def get_default_config() -> CN:
    """A fresh, mutable copy of the defaults."""
    return _C.clone()


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    with open(path, 'r') as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def merge_config_file(config: CN, path: str, _seen: Optional[tuple] = None) -> None:
    """Merge ``path`` (after its ``BASE:`` files, recursively) into ``config``.

    Unknown keys and values of the wrong type raise ``ConfigError`` naming the key and the file.
    """
    path = os.path.normpath(path)
    seen = (_seen or ()) + (os.path.abspath(path),)
    data = _read_yaml(path)
    bases = data.get('BASE', ['']) or ['']
    if isinstance(bases, str):
        bases = [bases]
    for base in bases:
        if base:
            base_path = os.path.join(os.path.dirname(path), base)
            if os.path.abspath(base_path) in seen:
                raise ConfigError(f"{path}: BASE file {base} includes itself")
            merge_config_file(config, base_path, seen)
    config.defrost()
    try:
        config.merge_from_other_cfg(CN(data))
    except KeyError as e:
        key = str(e).strip("'\"").replace('Non-existent config key: ', '')
        raise ConfigError(f"{path}: unknown config key {key}") from None
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def merge_opts(config: CN, opts: Optional[Iterable[str]]) -> None:
    """Merge ``KEY VALUE`` pairs from the command line."""
    opts = list(opts or [])
    if not opts:
        return
    if len(opts) % 2:
        raise ConfigError(f"--opts: expected KEY VALUE pairs, got an odd number of items: {opts}")
    config.defrost()
    try:
        config.merge_from_list(opts)
    except (KeyError, AssertionError) as e:
        raise ConfigError(f"--opts: {str(e).strip(chr(39))}") from None
    except ValueError as e:
        raise ConfigError(f"--opts: {e}") from None


def _flag(args: Any, name: str) -> Any:
    return getattr(args, name, None) if args is not None else None


def update_config(config: CN, args: Any) -> CN:
    """Apply ``--cfg``, ``--opts`` and the dedicated flags of ``args`` (an argparse namespace)."""
    config.defrost()
    if _flag(args, 'cfg'):
        merge_config_file(config, args.cfg)
    merge_opts(config, _flag(args, 'opts'))

    if _flag(args, 'batch_size') is not None:
        config.DATA.BATCH_SIZE = int(args.batch_size)
    if _flag(args, 'resume'):
        config.MODEL.RESUME = args.resume
    if _flag(args, 'pretrained'):
        config.TRAIN.PRETRAINED_PATH = args.pretrained
    if _flag(args, 'accumulation_steps') is not None:
        config.TRAIN.ACCUMULATION_STEPS = int(args.accumulation_steps)
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

    finalize_config(config)
    return config


def finalize_config(config: CN) -> CN:
    """Check values and derive TAG / OUTPUT. Called once after all overrides."""
    config.defrost()
    if config.AMP_OPT_LEVEL:
        if config.AMP_OPT_LEVEL not in AMP_OPT_LEVELS:
            raise ConfigError(f"AMP_OPT_LEVEL: expected one of {sorted(AMP_OPT_LEVELS)}, got {config.AMP_OPT_LEVEL!r}")
        config.TRAIN.AMP = AMP_OPT_LEVELS[config.AMP_OPT_LEVEL]
    _check_choice('TRAIN.AMP', config.TRAIN.AMP, AMP_MODES)
    _check_choice('DATA.DECODER', config.DATA.DECODER, ('auto', 'decord', 'pyav'))
    _check_choice('DATA.SAMPLING', config.DATA.SAMPLING, ('segment', 'dense'))
    _check_choice('TEST.NUM_CROP', config.TEST.NUM_CROP, (1, 3))
    _check_choice('TEST.FINAL_NUM_CROP', config.TEST.FINAL_NUM_CROP, (1, 3))
    _check_choice('TEST.ON_UNREADABLE', config.TEST.ON_UNREADABLE, ('skip', 'error'))
    _check_choice('TEST.SCORE_AGG', config.TEST.SCORE_AGG, ('softmax', 'logits'))
    _check_choice('MODEL.DROP_PATH_MODE', config.MODEL.DROP_PATH_MODE, ('video', 'frame'))
    _check_choice('TRAIN.OPTIMIZER.NAME', config.TRAIN.OPTIMIZER.NAME.lower(), ('sgd', 'adamw'))
    _check_choice('TRAIN.LR_SCHEDULER.NAME', config.TRAIN.LR_SCHEDULER.NAME, ('cosine', 'linear', 'step'))
    _check_choice('AUG.MIXUP_MODE', config.AUG.MIXUP_MODE, ('batch', 'pair', 'elem'))
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
        config.TAG = (f"LR_{config.TRAIN.BASE_LR}_EP_{config.TRAIN.EPOCHS}_OPT_{config.TRAIN.OPTIMIZER.NAME}"
                      f"_FRAMES_{config.DATA.NUM_FRAMES}")
    config.OUTPUT = os.path.join(config.OUTPUT, config.DATA.DATASET, config.MODEL.NAME or config.MODEL.TYPE,
                                 config.TAG)
    if os.environ.get('PT_OUTPUT_DIR'):
        config.OUTPUT = os.environ['PT_OUTPUT_DIR']
    config.freeze()
    return config


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
    """The merged config as YAML text (what checkpoints and OUTPUT/config.yaml store)."""
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
