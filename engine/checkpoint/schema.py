"""What a training checkpoint holds: the one definition of its entries.

``engine/trainer.py`` builds every checkpoint through :func:`make_checkpoint`, which refuses a missing or an
unknown entry, and the table of entries in docs/checkpoints.md (and in README, where it carries one) is
:func:`markdown_table` (a test compares them), so the format, the code and the documentation cannot drift
apart. Everything is plain data (tensors, numbers, strings, lists, dicts), so a checkpoint loads with
``torch.load(weights_only=True)``.

Checkpoints of the original code hold a subset (``model``, ``optimizer``, ``lr_scheduler``, ``max_accuracy``,
``epoch``, a pickled ``config``, maybe ``amp``); ``engine/resume.py`` restores what is there.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

# (entries, meaning): the rows of docs/checkpoints.md's table, in the order a checkpoint lists them.
ENTRIES: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (('model',), 'state dict, same keys and shapes as the released checkpoints'),
    (('optimizer', 'lr_scheduler', 'scaler'), 'optimizer, schedule and fp16 loss-scaler state (`scaler` is `None` '
                                              'without fp16)'),
    (('ema',), 'EMA weights and their update count (`TRAIN.EMA`), or `None`'),
    (('epoch',), 'the last completed epoch (-1 when a preemption came during the first)'),
    (('epoch_step',), 'optimizer updates already done in the next epoch: > 0 only after a preemption, where the '
                      'resume skips them'),
    (('step',), 'optimizer updates done in total'),
    (('max_accuracy',), 'best validation top-1 so far (%), `best.pth`\'s own figure included'),
    (('epoch_record', 'is_best'), "epoch `epoch`'s line of `metrics.jsonl` (validation top-1 of these weights "
                                  "included) and whether they are `best.pth`: a resume completes an interrupted "
                                  "save from them"),
    (('world_size', 'batch_size', 'accumulation_steps', 'global_batch_size'),
     'processes, clips per process and micro-batches per update of the run that saved it, and their product, the '
     'global batch: a mid-epoch resume maps `epoch_step` by clips consumed, and with the same global batch on '
     'another layout continues exactly'),
    (('config',), 'the merged config as YAML text'),
    (('rng', 'mixup'), "rank 0's Python, NumPy, torch CPU and CUDA RNG states, and its Mixup/CutMix generator "
                       "(`None` without mixing)"),
    (('rng_per_rank',), "every rank's `{rng, mixup}`, in rank order, for an exact resume with the same number "
                        "of processes (with another number every rank starts from rank 0's)"),
    (('epoch_meters',), "every rank's running sums of the interrupted epoch (`loss`, `grad_norm`, `step_time`, "
                        "`data_time`: `{val, sum, count}`) and the epoch's `unreadable` / drawn videos, in rank "
                        "order, so that the epoch's metrics line equals an uninterrupted one; `None` at an epoch end"),
    (('class_names',), 'class names by id, read from `DATA.LABEL_LIST` when the checkpoint is made (`None` when '
                       'that list is absent or does not have `MODEL.NUM_CLASSES` names): the tools name classes '
                       'without the label file'),
)

KEYS: Tuple[str, ...] = tuple(key for keys, _ in ENTRIES for key in keys)


def label_names(config_text: Optional[str]) -> Optional[List[str]]:
    """The class names that the config's ``DATA.LABEL_LIST`` holds, or None.

    None when there is no config text, no label list file, an unreadable one, or one whose number of
    names is not ``MODEL.NUM_CLASSES`` (a partial list would name the wrong classes).
    """
    if not config_text:
        return None
    import yaml

    from datasets.annotations import read_label_list
    try:
        config = yaml.safe_load(config_text) or {}
        path = config['DATA']['LABEL_LIST']
        num_classes = int(config['MODEL']['NUM_CLASSES'])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return None
    if not path or not os.path.isfile(path):
        return None
    try:
        names = read_label_list(path)
    except (OSError, ValueError):
        return None
    return names if len(names) == num_classes else None


def make_checkpoint(**entries: Any) -> Dict[str, Any]:
    """The checkpoint dict of ``entries``, which must be exactly :data:`KEYS` (``ValueError`` otherwise).

    ``class_names`` may be left out: it is then read from the label list that ``config`` (YAML text) names,
    so every checkpoint carries the names of the classes it was trained on."""
    if 'class_names' not in entries:
        entries['class_names'] = label_names(entries.get('config'))
    missing = [k for k in KEYS if k not in entries]
    unknown = [k for k in entries if k not in KEYS]
    if missing or unknown:
        raise ValueError(f'checkpoint entries: missing {missing}, unknown {unknown} (engine/checkpoint/schema.py '
                         'defines them)')
    return {k: entries[k] for k in KEYS}


def markdown_table() -> str:
    """docs/checkpoints.md's table of the entries (``| key | content |``), one row per group of :data:`ENTRIES`."""
    rows: List[str] = ['| key | content |', '|---|---|']
    rows += ['| ' + ', '.join(f'`{k}`' for k in keys) + f' | {meaning} |' for keys, meaning in ENTRIES]
    return '\n'.join(rows)
