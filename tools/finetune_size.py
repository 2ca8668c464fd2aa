"""The fine-tune recipe that fits a checkpoint: ``python -m tools.finetune_size CKPT``.

Prints the size name (``toy``, ``tiny``, ``small``, ``base``) of the ``configs/finetune/video-focalnet_<size>.yaml``
whose model is the checkpoint's, so ``scripts/finetune.sh`` starts the matching recipe without ``MODEL=``. The
architecture comes from the weights' shapes (width, blocks per stage, focal levels, MLP ratio, tubelet), and
from the checkpoint's stored config for what the shapes do not say. A checkpoint that fits no shipped recipe is
one line naming what it holds (exit 2); the tensors are memory-mapped, not read.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Dict, Optional, Sequence

FINETUNE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'finetune')
_PREFIX = 'video-focalnet_'


def recipe_architectures(folder: str = FINETUNE_DIR) -> Dict[str, dict]:
    """``{size: architecture}`` of every ``video-focalnet_<size>.yaml`` in ``folder`` (bases resolved)."""
    from engine.config import get_default_config, merge_config_file
    from models.sizes import config_architecture

    sizes = {}
    for path in sorted(glob.glob(os.path.join(folder, _PREFIX + '*.yaml'))):
        config = get_default_config()
        merge_config_file(config, path)
        sizes[os.path.basename(path)[len(_PREFIX):-len('.yaml')]] = config_architecture(config)
    return sizes


def checkpoint_architecture(path: str) -> dict:
    """What a checkpoint holds: its stored config's model, overridden by its tensor shapes."""
    from engine.checkpoint import extract_state_dict, load_checkpoint_file
    from engine.config import config_from_yaml_text
    from models.sizes import config_architecture, shape_architecture
    from tools._common import config_text

    checkpoint = load_checkpoint_file(path, mmap=True)
    stored = {}
    text = config_text(checkpoint.get('config'))
    if text:
        try:
            stored = config_architecture(config_from_yaml_text(text))
        except Exception:  # a config of another version: the shapes alone decide
            stored = {}
    return {**stored, **shape_architecture(extract_state_dict(checkpoint, 'model', path))}


def finetune_size(path: str, folder: str = FINETUNE_DIR) -> str:
    """The size whose recipe fits the checkpoint at ``path``; ``ValueError`` naming what it holds otherwise."""
    from models.sizes import describe_architecture, matching_size

    found = checkpoint_architecture(path)
    sizes = recipe_architectures(folder)
    size = matching_size(found, sizes)
    if size is None:
        raise ValueError(f"{path}: holds a Video-FocalNet of {describe_architecture(found)}; no fine-tune recipe has "
                         f"that model ({', '.join(f'{_PREFIX}{s}.yaml' for s in sizes)} in "
                         f"{os.path.relpath(folder)}); pass --cfg with a config of this model to main.py instead")
    return size


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.finetune_size', description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', metavar='CKPT', help='the checkpoint to fine-tune from')
    args = parser.parse_args(argv)
    from engine.checkpoint import CheckpointError
    from tools._common import user_error
    try:
        print(finetune_size(args.checkpoint))
    except (OSError, ValueError, CheckpointError) as e:
        return user_error(e)
    return 0


if __name__ == '__main__':
    sys.exit(main())
