"""Make a release file from a training checkpoint: model weights, config text and class names, hash in the name.

    python -m tools.publish CKPT OUT [--use-ema] [--labels CSV]

Keeps the ``model`` state dict (or, with ``--use-ema``, the EMA weights stored under ``ema``,
published as ``model``), the config as YAML text and the class names (``class_names``: from ``--labels``,
else those the checkpoint carries, else the config's ``DATA.LABEL_LIST`` file; always as many as the
head has classes), so that the file alone names its predictions; drops optimizer, scheduler, grad-scaler, RNG and EMA
state. Weights holding NaN / inf or a zero-size tensor are refused. Writes ``OUT`` with the first 8 hex digits of the file's sha256 before the extension
(``name-1a2b3c4d.pth``, mmaction2's convention), prints the full sha256, and never overwrites a file (the same
release published again is found by its sha256 and reported, exit 0).
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
from typing import Dict, List, Optional, Sequence

import torch

from engine.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file
from engine.checkpoint.schema import label_names
from tools._common import config_text, stored_class_names, user_error
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


def check_releasable(weights: Dict[str, torch.Tensor], source: str = '') -> None:
    """Refuse weights that no one should download: NaN / inf values (a diverged run evaluates at chance) and
    tensors with a zero-size dimension (a damaged or hand-edited state dict: no model of this project has one)."""
    empty = [f'{k} {list(v.shape)}' for k, v in weights.items() if v.numel() == 0]
    if empty:
        raise CheckpointError(f"{source}: the weights hold zero-size tensor(s) {', '.join(empty[:4])}; not a model "
                              'to release')
    bad = [f'{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()})' for k, v in weights.items()
           if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} weight tensor(s) hold NaN or inf: {', '.join(bad[:4])}"
                              f"{' ...' if len(bad) > 4 else ''}; not a model to release (publish a checkpoint of "
                              'an epoch before the run diverged)')


def release_class_names(checkpoint: dict, weights: Dict[str, torch.Tensor], text: Optional[str],
                        labels: Optional[str] = None, source: str = '') -> Optional[List[str]]:
    """The class names to publish: ``labels`` (an ``id,name`` csv), else the checkpoint's ``class_names``,
    else the config's label list; None when there are none. Names given for another number of classes than
    the head's are an error (``--labels``) or ignored (found ones)."""
    head = weights.get('head.weight')
    num_classes = int(head.shape[0]) if head is not None and head.dim() == 2 else None
    if labels:
        from datasets import read_label_list
        names = read_label_list(labels)
        if num_classes is not None and len(names) != num_classes:
            raise ValueError(f"--labels {labels}: {len(names)} class names, but the model in {source} has "
                             f"{num_classes} classes (head.weight {list(head.shape)})")
        return names
    for names in (stored_class_names(checkpoint, num_classes) if num_classes else None, label_names(text)):
        if names is not None and (num_classes is None or len(names) == num_classes):
            return names
    return None


def release_state(checkpoint: dict, use_ema: bool = False, source: str = '', labels: Optional[str] = None) -> dict:
    """The dict that is published: ``model`` tensors, ``config`` text, ``class_names`` and a little metadata.

    Args:
        checkpoint: what ``load_checkpoint_file`` returned.
        use_ema: publish the EMA weights instead of ``model``.
        source: the checkpoint's path, recorded in ``meta``.
        labels: ``id,name`` csv with the class names (default: those stored or configured, see
            :func:`release_class_names`).
    """
    weights = model_weights(checkpoint, use_ema, source)
    check_releasable(weights, source)
    # clone: a view into a larger storage would otherwise be saved together with all of that storage
    state = {'model': {k: v.detach().cpu().clone().contiguous() for k, v in weights.items()}}
    text = config_text(checkpoint.get('config'))
    if text is not None:
        state['config'] = text
    names = release_class_names(checkpoint, weights, text, labels, source)
    if names is not None:
        state['class_names'] = names
    meta = {'source': os.path.basename(source), 'weights': 'ema' if use_ema else 'model'}
    for k in ('epoch', 'max_accuracy'):
        value = checkpoint.get(k)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            meta[k] = value
    state['meta'] = meta
    return state


def publish(ckpt: str, out: str, use_ema: bool = False, labels: Optional[str] = None) -> tuple:
    """Write the release file; returns (final path, sha256, number of class names stored, whether the file is
    new). A file of that name with the same sha256 is the same release: it is kept and reported, so running
    the command again succeeds. One with another sha256 (the 8-digit prefix collided) is never overwritten."""
    checkpoint = load_checkpoint_file(ckpt)
    state = release_state(checkpoint, use_ema=use_ema, source=ckpt, labels=labels)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = temp_path(out)
    try:
        with open(tmp, 'xb') as f:  # a file object, not a path: torch.save would put the path's name in the
            torch.save(state, f)    # archive, and the hash must depend on the content only
        sha = sha256_of(tmp)
        final = hashed_name(out, sha)
        new = True
        try:
            create_exclusively(tmp, final)
        except FileExistsError:
            if not os.path.isfile(final) or sha256_of(final) != sha:
                raise FileExistsError(f"{final}: already exists with other content (another sha256); not "
                                      f"overwriting it") from None
            new = False
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return final, sha, len(state.get('class_names') or ()), new


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.publish', description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='training checkpoint (this project or the original code)')
    parser.add_argument('out', help="release file name, e.g. video-focalnet_base_k400.pth (the hash is added)")
    parser.add_argument('--use-ema', action='store_true', help='publish the EMA weights instead of the model')
    parser.add_argument('--labels', default=None, metavar='CSV',
                        help="'id,name' csv of the class names to store (default: the names the checkpoint "
                             "carries, else its config's DATA.LABEL_LIST)")
    args = parser.parse_args(argv)
    try:
        final, sha, named, new = publish(args.checkpoint, args.out, use_ema=args.use_ema, labels=args.labels)
    except (OSError, ValueError, RuntimeError) as e:
        return user_error(e)
    print(("wrote " if new else "already published (same sha256, file left as it is): ") + f"{final}\nsha256 {sha}\n"
          + (f"class names: {named} stored" if named else
             "class names: none stored (pass --labels CSV so that predictions with this file are named)"))
    return 0


if __name__ == '__main__':
    sys.exit(main())
