"""A dataset from a folder of class subfolders: ``python -m datasets.prepare folder``.

Usage::

    python -m datasets.prepare folder --videos DIR --out OUT [--val-fraction 0.2] [--seed 0]
        [--root DIR] [--overwrite]

The class of a video is the name of the first-level subfolder it lies in (any characters, commas and
spaces included; deeper subfolders belong to the same class). When ``DIR`` holds ``train/`` and ``val/``,
each with class subfolders, those are the splits; otherwise every class is split on its own
(stratified): ``round(n * val_fraction)`` of its videos, at least 1 and at most ``n - 1``, go to val,
chosen by a generator seeded with ``(seed, class name)``, so a class's split does not change when other
classes are added. A class with a single video goes to train, with a note.

Class ids are the sorted class names (``labels.csv``, ``id,name``). ``train.csv`` / ``val.csv`` list
``path,label`` with paths relative to ``--root`` (default: ``DIR`` itself, recorded as an absolute path in
the manifest as ``root``: set ``DATA.ROOT`` to it), so the lists work from any working directory.
Files that are not videos (by extension; hidden files are ignored) are listed and left out; an empty
class folder, or a video directly in ``DIR`` (no class), is an error naming it. The outputs are written
like the other prepare commands' (``outputs.write_outputs``: atomic, refusing to replace other lists
without ``--overwrite``), with ``manifest.json`` last.

New (the original trained only on the official datasets).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .manifest import MANIFEST_NAME, sha256_of_text
from .outputs import write_outputs
from .sources import PrepareError
from .videos import VIDEO_EXTENSIONS

# .mov is what phones record; the decoders read it like the others.
FOLDER_EXTENSIONS = VIDEO_EXTENSIONS + ('.mov', '.m4v')
SPLIT_FOLDERS = ('train', 'val')
LABELS_FILE = 'labels.csv'
SHOWN = 5   # files quoted per line


@dataclass
class FolderSplit:
    name: str
    rows: List[Tuple[str, int]]          # (path relative to root, class id), sorted by path

    @property
    def file(self) -> str:
        return f'{self.name}.csv'


@dataclass
class FolderDataset:
    videos: str
    root: str                            # absolute; the paths in the lists are relative to it
    layout: str                          # 'split folders' or 'stratified split'
    classes: List[str]
    splits: List[FolderSplit]
    left_out: List[str] = field(default_factory=list)   # non-video files, relative to videos
    notes: List[str] = field(default_factory=list)
    val_fraction: Optional[float] = None
    seed: Optional[int] = None


def _is_hidden(name: str) -> bool:
    return name.startswith('.')


def _scan_class(folder: str) -> Tuple[List[str], List[str]]:
    """``(videos, other files)`` anywhere under a class folder, absolute, sorted."""
    videos, others = [], []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            if _is_hidden(name):
                continue
            path = os.path.join(parent, name)
            (videos if os.path.splitext(name)[1].lower() in FOLDER_EXTENSIONS else others).append(path)
    return sorted(videos), sorted(others)


def _scan_classes(folder: str, what: str) -> Tuple[Dict[str, List[str]], List[str]]:
    """``({class name: videos}, non-video files)`` of a folder of class subfolders.

    Raises:
        PrepareError: no class subfolder, an empty class folder, or videos lying outside any class folder.
    """
    entries = sorted(e for e in os.listdir(folder) if not _is_hidden(e))
    stray = [e for e in entries if not os.path.isdir(os.path.join(folder, e))]
    stray_videos = [e for e in stray if os.path.splitext(e)[1].lower() in FOLDER_EXTENSIONS]
    if stray_videos:
        raise PrepareError(f"{folder}: {len(stray_videos)} video(s) outside any class folder "
                           f"({', '.join(stray_videos[:SHOWN])}); {what} must hold one subfolder per class")
    classes: Dict[str, List[str]] = {}
    others = [os.path.join(folder, e) for e in stray]
    empty = []
    for name in entries:
        path = os.path.join(folder, name)
        if not os.path.isdir(path):
            continue
        videos, other = _scan_class(path)
        others += other
        if not videos:
            empty.append(path)
        classes[name] = videos
    if empty:
        raise PrepareError(f"{empty[0]}: class folder holds no video files ({' '.join(FOLDER_EXTENSIONS)})"
                           + (f"; also empty: {', '.join(empty[1:SHOWN + 1])}" if len(empty) > 1 else ''))
    if not classes:
        raise PrepareError(f"{folder}: no class subfolders; expected {what}/<class name>/<video files>")
    return classes, others


def _stratified(classes: Dict[str, List[str]], val_fraction: float, seed: int,
                notes: List[str]) -> Dict[str, Dict[str, List[str]]]:
    """``{'train': {class: videos}, 'val': {...}}``: each class split on its own, deterministically."""
    out: Dict[str, Dict[str, List[str]]] = {'train': {}, 'val': {}}
    single = []
    for name, videos in classes.items():
        if len(videos) < 2:
            out['train'][name] = list(videos)
            single.append(name)
            continue
        n_val = min(len(videos) - 1, max(1, round(len(videos) * val_fraction)))
        order = list(videos)
        random.Random(f'{seed}:{name}').shuffle(order)   # str seeds are hashed stably (sha512)
        out['val'][name] = sorted(order[:n_val])
        out['train'][name] = sorted(order[n_val:])
    if single:
        notes.append(f"{len(single)} class(es) with a single video, used for training only (not in val): "
                     f"{', '.join(repr(s) for s in single[:SHOWN])}" + (' ...' if len(single) > SHOWN else ''))
    return out


def _relative(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel.startswith('..'):
        raise PrepareError(f"{path}: outside --root {root}")
    return rel.replace(os.sep, '/')


def prepare_folder(videos: str, val_fraction: float = 0.2, seed: int = 0, root: str = '') -> FolderDataset:
    """Scan ``videos`` and split it; raise PrepareError on anything wrong (see the module docstring)."""
    if not os.path.isdir(videos):
        raise PrepareError(f"{videos}: not a folder (--videos)")
    root_abs = os.path.abspath(root or videos)
    notes: List[str] = []
    split_dirs = [os.path.join(videos, s) for s in SPLIT_FOLDERS]
    if all(os.path.isdir(d) for d in split_dirs):
        per_split = {}
        others: List[str] = []
        for split, folder in zip(SPLIT_FOLDERS, split_dirs):
            per_split[split], other = _scan_classes(folder, os.path.join(videos, split))
            others += other
        layout, val_fraction_used, seed_used = 'split folders', None, None
        only_val = sorted(set(per_split['val']) - set(per_split['train']))
        only_train = sorted(set(per_split['train']) - set(per_split['val']))
        if only_val:
            notes.append(f"{len(only_val)} class(es) only in val/ (the model never trains on them): "
                         f"{', '.join(repr(c) for c in only_val[:SHOWN])}")
        if only_train:
            notes.append(f"{len(only_train)} class(es) only in train/ (never validated): "
                         f"{', '.join(repr(c) for c in only_train[:SHOWN])}")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise PrepareError(f"--val-fraction {val_fraction}: expected a number between 0 and 1 (exclusive)")
        classes, others = _scan_classes(videos, videos)
        per_split = _stratified(classes, val_fraction, seed, notes)
        layout, val_fraction_used, seed_used = 'stratified split', val_fraction, seed
    names = sorted(set(per_split['train']) | set(per_split['val']))
    ids = {name: i for i, name in enumerate(names)}
    splits = []
    for split in SPLIT_FOLDERS:
        rows = sorted((_relative(path, root_abs), ids[name])
                      for name, paths in per_split[split].items() for path in paths)
        if not rows:
            raise PrepareError(f"{videos}: split {split!r} has no videos (each class needs at least 2 videos "
                               f"for a val split)" if split == 'val' else f"{videos}: no training videos")
        splits.append(FolderSplit(split, rows))
    left_out = [os.path.relpath(p, videos).replace(os.sep, '/') for p in sorted(others)]
    return FolderDataset(videos, root_abs, layout, names, splits, left_out, notes, val_fraction_used, seed_used)


def render_folder(dataset: FolderDataset) -> Dict[str, str]:
    """``{file name: text}``: labels.csv, the split lists, manifest.json last."""
    labels = 'id,name\n' + ''.join(f'{i},{name}\n' for i, name in enumerate(dataset.classes))
    files: Dict[str, str] = {LABELS_FILE: labels}
    splits = {}
    for s in dataset.splits:
        text = ''.join(f'{path},{label}\n' for path, label in s.rows)
        files[s.file] = text
        splits[s.name] = {'file': s.file, 'videos': len(s.rows), 'classes': len({label for _, label in s.rows}),
                          'sha256': sha256_of_text(text), 'source': dataset.layout}
    manifest = {
        'dataset': 'folder',
        'created': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'videos': dataset.videos,
        'root': dataset.root,
        'layout': dataset.layout,
        'val_fraction': dataset.val_fraction,
        'seed': dataset.seed,
        'splits': splits,
        'labels': {'file': LABELS_FILE, 'classes': len(dataset.classes), 'sha256': sha256_of_text(labels)},
        'left_out': dataset.left_out,
    }
    files[MANIFEST_NAME] = json.dumps(manifest, indent=2, ensure_ascii=False) + '\n'
    return files


def summary_lines(dataset: FolderDataset) -> List[str]:
    lines = [f"{dataset.videos}: {len(dataset.classes)} classes ({dataset.layout}"
             + (f", val fraction {dataset.val_fraction:g}, seed {dataset.seed}" if dataset.val_fraction else '')
             + ')']
    for s in dataset.splits:
        lines.append(f"{s.name}: {len(s.rows)} videos, {len({label for _, label in s.rows})} classes")
    lines += [f"note: {n}" for n in dataset.notes]
    if dataset.left_out:
        lines.append(f"left out {len(dataset.left_out)} file(s) that are not videos "
                     f"({' '.join(FOLDER_EXTENSIONS)}): {', '.join(dataset.left_out[:SHOWN])}"
                     + (' ...' if len(dataset.left_out) > SHOWN else '') + f" (all listed in {MANIFEST_NAME})")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m datasets.prepare folder',
        description="Write labels.csv, train.csv, val.csv and manifest.json for a folder of class subfolders.")
    parser.add_argument('--videos', required=True, metavar='DIR',
                        help='DIR/<class>/<videos>, or DIR/train/<class>/... and DIR/val/<class>/...')
    parser.add_argument('--out', required=True, metavar='OUT', help='output folder')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='share of each class held out for val when DIR has no train/ and val/ (default 0.2)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split (default 0)')
    parser.add_argument('--root', default='', metavar='DIR',
                        help='write paths relative to DIR (default: --videos); set DATA.ROOT to it')
    parser.add_argument('--overwrite', action='store_true', help='replace output files that hold other lists')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dataset = prepare_folder(args.videos, args.val_fraction, args.seed, args.root)
        for line in summary_lines(dataset):
            print(line)
        written, _ = write_outputs(args.out, render_folder(dataset), overwrite=args.overwrite)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if written:
        print(f"wrote {', '.join(written)} in {args.out}; train with DATA.ROOT {dataset.root} "
              f"(scripts/finetune.sh {args.out} CHECKPOINT sets it)")
    else:
        print(f"{args.out}: already up to date, nothing written")
    return 0
