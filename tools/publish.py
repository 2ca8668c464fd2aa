"""Make a release file from a training checkpoint: model weights and config text only, hash in the name.

    python -m tools.publish CKPT OUT [--use-ema]

Keeps the ``model`` state dict (or, with ``--use-ema``, the EMA weights stored under ``ema``,
published as ``model``) and the config as YAML text; drops optimizer, scheduler, grad-scaler, RNG and EMA
state. Writes ``OUT`` with the first 8 hex digits of the file's sha256 before the extension
(``name-1a2b3c4d.pth``, mmaction2's convention), prints the full sha256, and never overwrites a file.
The result loads with ``torch.load(path, weights_only=True)`` and with ``engine.checkpoint.load_model_weights``.

Works on checkpoints of this project and on the original code's checkpoints (read without unpickling
code, via ``engine.checkpoint.load_checkpoint_file``). The original had no such tool: its release files
carried optimizer state and a pickled yacs config, so ``weights_only=True`` could not read them.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Dict, Optional, Sequence

import torch

from engine.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file
from tools._common import config_text, user_error
from utils.fs import create_exclusively, temp_path


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def hashed_name(out: str, sha: str) -> str:
    """``dir/name.ext`` -> ``dir/name-<first 8 hex digits>.ext`` (``.pth`` when ``out`` has no extension)."""
    stem, ext = os.path.splitext(out)
    return f'{stem}-{sha[:8]}{ext or ".pth"}'


def model_weights(checkpoint: dict, use_ema: bool = False, source: str = '') -> Dict[str, torch.Tensor]:
    """The state dict to publish: ``model``, or with ``use_ema`` the EMA copy.

    The EMA entry is ``ema`` = ``{'model': state_dict, 'decay': ..., 'num_updates': ...}`` (``engine/ema.py``);
    a bare state dict under ``ema`` is accepted too. ``module.``/``_orig_mod.`` prefixes are removed.
    """
    if not use_ema:
        return extract_state_dict(checkpoint, 'model', source)
    ema = checkpoint.get('ema')
    if ema is None:
        raise CheckpointError(f"{source}: --use-ema, but the checkpoint holds no EMA weights "
                              f"(its 'ema' entry is missing or empty: trained without TRAIN.EMA)")
    if isinstance(ema, dict) and 'model' in ema:
        return extract_state_dict(ema, 'model', f'{source} [ema]')
    return extract_state_dict(checkpoint, 'ema', source)


def release_state(checkpoint: dict, use_ema: bool = False, source: str = '') -> dict:
    """The dict that is published: ``model`` tensors, ``config`` text and a little metadata.

    Args:
        checkpoint: what ``load_checkpoint_file`` returned.
        use_ema: publish the EMA weights instead of ``model``.
        source: the checkpoint's path, recorded in ``meta``.
    """
    weights = model_weights(checkpoint, use_ema, source)
    # clone: a view into a larger storage would otherwise be saved together with all of that storage
    state = {'model': {k: v.detach().cpu().clone().contiguous() for k, v in weights.items()}}
    text = config_text(checkpoint.get('config'))
    if text is not None:
        state['config'] = text
    meta = {'source': os.path.basename(source), 'weights': 'ema' if use_ema else 'model'}
    for k in ('epoch', 'max_accuracy'):
        value = checkpoint.get(k)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            meta[k] = value
    state['meta'] = meta
    return state


def publish(ckpt: str, out: str, use_ema: bool = False) -> tuple:
    """Write the release file; returns (final path, sha256). Refuses to overwrite an existing file."""
    checkpoint = load_checkpoint_file(ckpt)
    state = release_state(checkpoint, use_ema=use_ema, source=ckpt)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = temp_path(out)
    try:
        with open(tmp, 'xb') as f:  # a file object, not a path: torch.save would put the path's name in the
            torch.save(state, f)    # archive, and the hash must depend on the content only
        sha = sha256_of(tmp)
        final = hashed_name(out, sha)
        try:
            create_exclusively(tmp, final)
        except FileExistsError:
            raise FileExistsError(f"{final}: already exists; not overwriting it") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final, sha


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='training checkpoint (this project or the original code)')
    parser.add_argument('out', help="release file name, e.g. video-focalnet_base_k400.pth (the hash is added)")
    parser.add_argument('--use-ema', action='store_true', help='publish the EMA weights instead of the model')
    args = parser.parse_args(argv)
    try:
        final, sha = publish(args.checkpoint, args.out, use_ema=args.use_ema)
    except (OSError, ValueError, RuntimeError) as e:
        return user_error(e)
    print(f"wrote {final}\nsha256 {sha}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
