"""Shared pieces of the command-line tools: config + checkpoint -> model, video path expansion, devices."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import torch

_logger = logging.getLogger(__name__)

# Exit codes of main.py and every tool (docs/exit-codes.md). 1 is left to Python: an uncaught exception (a bug).
EXIT_OK = 0
EXIT_USER_ERROR = 2        # bad command line, config, annotation file, checkpoint, output folder: one line, no traceback
EXIT_NON_FINITE_LOSS = 3   # training stopped on a NaN / inf loss
EXIT_UNREADABLE = 4        # unreadable videos: too many in training, any with TEST.ON_UNREADABLE error, any in predict
EXIT_INTERRUPTED = 130     # Ctrl-C (SIGINT), the shell's 128 + 2


def user_error(error: BaseException) -> int:
    """Print ``error: <message>`` (its first line: a message is one line) on stderr; ``EXIT_USER_ERROR``."""
    text = str(error).strip() or type(error).__name__
    print(f"error: {text.splitlines()[0]}", file=sys.stderr)
    return EXIT_USER_ERROR

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov')


def add_model_arguments(parser) -> None:
    """The arguments every model-running tool takes: --cfg, --resume, --device, --opts."""
    parser.add_argument('--cfg', default=None,
                        help='config file; default: the config stored in the checkpoint')
    parser.add_argument('--resume', required=True, metavar='CKPT', help='checkpoint with the model weights')
    parser.add_argument('--device', default=None, choices=('cpu', 'cuda'),
                        help='default: cuda when available, else cpu')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='KEY VALUE',
                        help="config overrides, e.g. --opts DATA.NUM_FRAMES 16")
    parser.add_argument('--allow-non-finite', action=_AllowNonFinite,
                        help='load weights that hold NaN or inf (refused by default)')


class _AllowNonFinite(argparse.Action):
    """``--allow-non-finite``: sets ``engine.checkpoint.weights``' process-wide default, which every weight load of the
    tool uses; a new parser (a new command) starts from refusing again."""

    def __init__(self, option_strings, dest, **kwargs):
        from engine.checkpoint.weights import set_allow_non_finite
        set_allow_non_finite(False)
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from engine.checkpoint.weights import set_allow_non_finite
        set_allow_non_finite(True)
        setattr(namespace, self.dest, True)


def resolve_device(name: Optional[str]) -> torch.device:
    """``cuda``/``cpu``; ``None`` picks cuda when available. Asking for cuda without a GPU is an error."""
    if name is None:
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use --device cpu)")
    return torch.device(name)


def _plain(obj):
    """Tuples to lists, recursively, so that ``yaml.safe_dump`` can write a config read from a pickle."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def config_text(config) -> Optional[str]:
    """A checkpoint's ``config`` entry as YAML text (``None`` when there is none).

    This project stores YAML text; the original pickled a yacs CfgNode, which
    ``engine.checkpoint.load_checkpoint_file`` returns as a plain dict.
    """
    if config is None or isinstance(config, str):
        return config
    if isinstance(config, dict):
        import yaml
        return yaml.safe_dump(_plain(config), sort_keys=True)
    raise ValueError(f"config entry of type {type(config).__name__}: expected YAML text or a mapping")


def load_tool_config(cfg: Optional[str], checkpoint: dict, ckpt_path: str, opts: Sequence[str] = ()):
    """The config for a tool: ``--cfg`` plus ``--opts``, or else the config stored in the checkpoint.

    Args:
        cfg: config file given on the command line, or None.
        checkpoint: the loaded checkpoint (``engine.checkpoint.load_checkpoint_file``).
        ckpt_path: its path, for messages.
        opts: ``KEY VALUE`` overrides.
    """
    from engine.config import ConfigError, config_from_yaml_text, load_config, merge_opts

    if cfg:
        return load_config(cfg, list(opts), resume=ckpt_path)
    text = config_text(checkpoint.get('config'))
    if not text or not text.strip():
        raise ConfigError(f"{ckpt_path}: the checkpoint stores no config text; pass --cfg CONFIG")
    config = config_from_yaml_text(text)
    merge_opts(config, opts)
    config.defrost()
    config.MODEL.RESUME = ckpt_path
    config.freeze()
    return config


def load_model(config, checkpoint: dict, device: torch.device) -> torch.nn.Module:
    """``build_model(config)`` with the checkpoint's weights (strict: a mismatch names the keys), in eval mode.

    The checkpoint's stored config must describe the same model as ``config``, and weights holding NaN / inf are
    refused unless ``--allow-non-finite`` was given (``engine.checkpoint.load_model_weights``)."""
    from models import build_model
    from engine.checkpoint import load_model_weights

    model = build_model(config)
    load_model_weights(model, checkpoint, strict=True, config=config, source=config.MODEL.RESUME or None)
    return model.to(device).eval()


def expand_videos(paths: Sequence[str]) -> list:
    """Files as given; folders become the video files inside them (recursively, sorted by path).

    A path that does not exist is kept: the caller reports it as unreadable with the others.
    """
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, _, files in os.walk(p):
                found += [os.path.join(root, f) for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
            if not found:
                _logger.warning("%s: folder holds no video files (%s)", p, ' '.join(VIDEO_EXTENSIONS))
            out += sorted(found)
        else:
            out.append(p)
    return out


def parse_views(text: str) -> tuple:
    """``'4x3'`` -> (4 clips, 3 crops); crops must be 1 or 3 (as in evaluation)."""
    try:
        clips, crops = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(f"--views {text!r}: expected CLIPSxCROPS, e.g. 4x3") from None
    if clips < 1 or crops not in (1, 3):
        raise ValueError(f"--views {text!r}: expected at least 1 clip and 1 or 3 crops")
    return clips, crops


def eval_dataset(config, paths: Sequence[str], num_clip: int, num_crop: int):
    """The evaluation pipeline of ``datasets.build_dataset(config, 'val')`` over a list of video files.

    Same decoder, frame sampler and test crops; every path gets label -1 (unknown). Unreadable videos are
    returned as markers (TEST.ON_UNREADABLE 'skip'), never substituted.
    """
    from datasets import VideoDataset
    from datasets.loader import build_frame_sampler
    from datasets.transforms import EvalTransform

    return VideoDataset([(p, -1) for p in paths], 'eval', frame_sampler=build_frame_sampler(config),
                        transform=EvalTransform(config.DATA.INPUT_SIZE, num_crop), decoder=config.DATA.DECODER,
                        seed=config.SEED, num_clip=num_clip, on_unreadable='skip', source='<command line>')


def stored_class_names(checkpoint: dict, num_classes: int) -> Optional[list]:
    """The checkpoint's ``class_names`` entry when it names exactly ``num_classes`` classes, else None."""
    names = checkpoint.get('class_names')
    if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def class_names(config, stored: Optional[Sequence[str]] = None) -> list:
    """Names by class id: ``DATA.LABEL_LIST`` when that file is there, else ``stored`` (the names a checkpoint
    carries, see :func:`stored_class_names`), else ``class <id>`` for what neither names."""
    from datasets import read_label_list

    k = config.MODEL.NUM_CLASSES
    path = config.DATA.LABEL_LIST
    names = list(read_label_list(path)) if path and os.path.isfile(path) else []
    if len(names) == k:
        return names
    if stored is not None and len(stored) == k:
        if names:
            _logger.warning("%s has %d names but the model has %d classes: using the names stored in the "
                            "checkpoint", path, len(names), k)
        return list(stored)
    if names:
        _logger.warning("%s has %d names but the model has %d classes: unnamed classes are shown by id",
                        path, len(names), k)
    else:
        _logger.warning("DATA.LABEL_LIST %r not found and the checkpoint stores no class names: classes are "
                        "shown by id", path)
    return names[:k] + [f'class {i}' for i in range(len(names), k)]
