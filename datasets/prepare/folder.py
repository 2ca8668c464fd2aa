"""A dataset from a folder of class subfolders: ``python -m datasets.prepare folder``.

Usage::

    python -m datasets.prepare folder --videos DIR --out OUT [--val-fraction 0.2] [--test-fraction 0.1]
        [--seed 0] [--root DIR] [--overwrite]

The class of a video is the name of the first-level subfolder it lies in (any characters, commas and
spaces included; deeper subfolders belong to the same class). When ``DIR`` holds ``train/`` and ``val/``
(and optionally ``test/``), each with class subfolders, those are the splits; otherwise every class is
split on its own (stratified): ``round(n * val_fraction)`` of its videos, at least 1, go to val and
``round(n * test_fraction)``, at least 1, to test, at least one staying in train; the videos are chosen by a
generator seeded with ``(seed, class name)``, so a class's split does not change when other classes are
added. A class too small for every split (one video: train only; two: no test) is named in a note. The
test split is held out from everything a run chooses (best.pth is picked on val), so the final test's
number is measured on videos nothing was chosen on.

Symbolic links are followed, each real folder and file once (``videos.walk_files``): a video reached
through several paths is listed once; one real file in two classes or two splits is an error naming
both paths, and a link back to a folder above it (a loop) is an error naming the link. A class or file
name holding a control character (a newline, a tab ...) is refused: the lists hold one video per line.

Class ids are the sorted class names (``labels.csv``, ``id,name``). ``train.csv`` / ``val.csv`` /
``test.csv`` list ``path,label`` with paths relative to ``--root`` (default: ``DIR`` itself, recorded as
an absolute path in the manifest as ``root``, which ``main.py`` and ``datasets.check`` use when
``DATA.ROOT`` is ''), so the lists work from any working directory. Files that are not videos (by
extension; hidden files are ignored) are listed and left out; an empty class folder, or a video directly
in ``DIR`` (no class), is an error naming it. The outputs are written like the other prepare commands'
(``outputs.write_outputs``: all or nothing, refusing to replace other lists without ``--overwrite``),
with ``manifest.json`` last.

New (the original trained only on the official datasets).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from utils.os_errors import write_error_reason

from .manifest import MANIFEST_NAME, sha256_of_text
from .outputs import write_outputs
from .sources import PrepareError
from .videos import VIDEO_EXTENSIONS, FileId, walk_files

# .mov is what phones record; the decoders read it like the others.
FOLDER_EXTENSIONS = VIDEO_EXTENSIONS + ('.mov', '.m4v')
SPLIT_FOLDERS = ('train', 'val')     # required for the split-folders layout
SPLITS = SPLIT_FOLDERS + ('test',)    # test/ (or --test-fraction): the held-out list of the final test
LABELS_FILE = 'labels.csv'
DEFAULT_TEST_FRACTION = 0.1
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
    test_fraction: Optional[float] = None


def _is_hidden(name: str) -> bool:
    return name.startswith('.')


def _scan_class(folder: str) -> Tuple[List[Tuple[str, FileId]], List[str]]:
    """``([(video, file id)], other files)`` anywhere under a class folder, sorted; links followed, each real
    file once (``walk_files``)."""
    videos, others = [], []
    for path, key in walk_files(folder):
        if os.path.splitext(path)[1].lower() in FOLDER_EXTENSIONS:
            videos.append((path, key))
        else:
            others.append(path)
    return videos, others


def _shown(text: str) -> str:
    """``text`` with its control characters as escapes (``\\n``), so an error about it stays one line."""
    return ''.join(c.encode('unicode_escape').decode('ascii') if _is_control(c) else c for c in text)


_CONTROL_NAMES = {'\n': 'a newline', '\r': 'a carriage return', '\t': 'a tab'}


def _is_control(char: str) -> bool:
    # Cc: C0/C1 controls (newline, tab, NEL ...); Zl/Zp: the line and paragraph separators. Each either ends
    # a CSV line or is one of the line breaks that str.splitlines, which reads the lists, splits at.
    return unicodedata.category(char) in ('Cc', 'Zl', 'Zp')


def _check_name(path: str, videos: str) -> None:
    """Refuse a path under ``videos`` whose file or folder names hold a control character."""
    rel = os.path.relpath(path, videos)
    bad = next((c for c in rel if _is_control(c)), None)
    if bad is not None:
        what = 'folder' if os.path.isdir(path) else 'file'
        described = _CONTROL_NAMES.get(bad) or unicodedata.name(bad, 'a control character').lower()
        raise PrepareError(f"{_shown(path)}: the {what} name holds the control character U+{ord(bad):04X} "
                           f"({described}), which the one-line-per-video lists cannot carry; rename it")


def _scan_classes(folder: str, what: str) -> Tuple[Dict[str, List[Tuple[str, FileId]]], List[str]]:
    """``({class name: [(video, file id)]}, non-video files)`` of a folder of class subfolders.

    Raises:
        PrepareError: no class subfolder, an empty class folder, videos lying outside any class folder, a
            name with a control character, or a link loop.
    """
    entries = sorted(e for e in os.listdir(folder) if not _is_hidden(e))
    for entry in entries:   # class names (files that are not videos are only listed, in the manifest)
        if os.path.isdir(os.path.join(folder, entry)):
            _check_name(os.path.join(folder, entry), folder)
    stray = [e for e in entries if not os.path.isdir(os.path.join(folder, e))]
    stray_videos = [e for e in stray if os.path.splitext(e)[1].lower() in FOLDER_EXTENSIONS]
    if stray_videos:
        raise PrepareError(f"{folder}: {len(stray_videos)} video(s) outside any class folder "
                           f"({', '.join(stray_videos[:SHOWN])}); {what} must hold one subfolder per class")
    classes: Dict[str, List[Tuple[str, FileId]]] = {}
    others = [os.path.join(folder, e) for e in stray]
    empty = []
    for name in entries:
        path = os.path.join(folder, name)
        if not os.path.isdir(path):
            continue
        videos, other = _scan_class(path)
        for video, _ in videos:
            _check_name(video, folder)
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


def _check_each_video_once(per_split: Dict[str, Dict[str, List[Tuple[str, FileId]]]]) -> None:
    """One real file (reached through links, or hard-linked) in two classes or two splits is an error naming
    both paths: it would be trained on under two labels, or validated on a video the model trained on."""
    first: Dict[FileId, Tuple[str, str, str]] = {}
    for split, classes in per_split.items():
        for name, videos in classes.items():
            for path, key in videos:
                if key not in first:
                    first[key] = (split, name, path)
                    continue
                split0, name0, path0 = first[key]
                where = (f"in class {name0!r} and class {name!r}" if split0 == split
                         else f"in {split0} (class {name0!r}) and {split} (class {name!r})")
                raise PrepareError(f"{path0} and {path} are the same video file ({os.path.realpath(path)}), "
                                   f"{where}: keep one of them (a video belongs to one class and one split)")


Videos = List[Tuple[str, FileId]]


def _stratified(classes: Dict[str, Videos], val_fraction: float, test_fraction: float, seed: int,
                notes: List[str]) -> Dict[str, Dict[str, Videos]]:
    """``{'train': {class: videos}, 'val': {...}, 'test': {...}}``: each class split on its own, deterministically.

    Of a class's shuffled videos the first ``n_val`` go to val (the same ones with or without a test split),
    the next ``n_test`` to test, the rest to train; train keeps at least one, val and test get at least one
    each when the class has enough videos for that.
    """
    out: Dict[str, Dict[str, Videos]] = {'train': {}, 'val': {}, 'test': {}}
    single, no_test = [], []
    for name, videos in classes.items():
        n = len(videos)
        if n < 2:
            out['train'][name] = list(videos)
            single.append(name)
            continue
        wanted_splits = 3 if test_fraction > 0 else 2
        if n < wanted_splits:
            no_test.append(name)
        n_val = min(n - (wanted_splits - 1) if n >= wanted_splits else n - 1, max(1, round(n * val_fraction)))
        n_test = min(n - 1 - n_val, max(1, round(n * test_fraction))) if test_fraction > 0 else 0
        order = list(videos)
        random.Random(f'{seed}:{name}').shuffle(order)   # str seeds are hashed stably (sha512)
        out['val'][name] = sorted(order[:n_val])
        if n_test:
            out['test'][name] = sorted(order[n_val:n_val + n_test])
        out['train'][name] = sorted(order[n_val + n_test:])
    if single:
        notes.append(f"{len(single)} class(es) with a single video, used for training only (not in val"
                     + (" or test" if test_fraction > 0 else '') + f"): {_quoted(single)}")
    if no_test:
        notes.append(f"{len(no_test)} class(es) with 2 videos, too few for train, val and test (not in test): "
                     f"{_quoted(no_test)}")
    return out


def _quoted(names: List[str]) -> str:
    return ', '.join(repr(s) for s in names[:SHOWN]) + (' ...' if len(names) > SHOWN else '')


def _relative(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel.startswith('..'):
        raise PrepareError(f"{path}: outside --root {root}")
    rel = rel.replace(os.sep, '/')
    # the list reader strips each line and skips lines starting with '#': './' keeps such names intact
    return './' + rel if rel[:1] == '#' or rel[:1].isspace() else rel


def prepare_folder(videos: str, val_fraction: float = 0.2, seed: int = 0, root: str = '',
                   test_fraction: float = 0.0) -> FolderDataset:
    """Scan ``videos`` and split it; raise PrepareError on anything wrong (see the module docstring)."""
    if not os.path.isdir(videos):
        raise PrepareError(f"{videos}: not a folder (--videos)")
    root_abs = os.path.abspath(root or videos)
    notes: List[str] = []
    split_dirs = {s: os.path.join(videos, s) for s in SPLITS}
    if all(os.path.isdir(split_dirs[s]) for s in SPLIT_FOLDERS):
        per_split: Dict[str, Dict[str, Videos]] = {}
        others: List[str] = []
        for split, folder in split_dirs.items():
            if split == 'test' and not os.path.isdir(folder):
                continue
            per_split[split], other = _scan_classes(folder, os.path.join(videos, split))
            others += other
        _check_each_video_once(per_split)
        layout, val_fraction_used, test_fraction_used, seed_used = 'split folders', None, None, None
        only_val = sorted(set(per_split['val']) - set(per_split['train']))
        only_train = sorted(set(per_split['train']) - set(per_split['val']))
        if only_val:
            notes.append(f"{len(only_val)} class(es) only in val/ (the model never trains on them): "
                         f"{', '.join(repr(c) for c in only_val[:SHOWN])}")
        if only_train:
            notes.append(f"{len(only_train)} class(es) only in train/ (never validated): "
                         f"{', '.join(repr(c) for c in only_train[:SHOWN])}")
        if 'test' not in per_split:
            notes.append(f"no test/ folder beside train/ and val/: no test split (the final test of best.pth "
                         f"runs on val, the list it was chosen on)")
    else:
        if not 0.0 < val_fraction < 1.0:
            raise PrepareError(f"--val-fraction {val_fraction}: expected a number between 0 and 1 (exclusive)")
        if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
            raise PrepareError(f"--test-fraction {test_fraction:g}: expected a number from 0 (no test split) to "
                               f"below 1, and below 1 together with --val-fraction {val_fraction:g}")
        classes, others = _scan_classes(videos, videos)
        _check_each_video_once({'all': classes})
        per_split = _stratified(classes, val_fraction, test_fraction, seed, notes)
        if not test_fraction:
            del per_split['test']
        layout, val_fraction_used, test_fraction_used, seed_used = 'stratified split', val_fraction, \
            test_fraction, seed
    names = sorted(set().union(*(set(classes) for classes in per_split.values())))
    ids = {name: i for i, name in enumerate(names)}
    splits = []
    for split, classes in per_split.items():
        rows = sorted((_relative(path, root_abs), ids[name])
                      for name, paths in classes.items() for path, _ in paths)
        if not rows:
            needed = {'val': '(each class needs at least 2 videos for a val split)',
                      'test': '(each class needs at least 3 videos for a test split); pass --test-fraction 0 for '
                              'none'}
            raise PrepareError(f"{videos}: split {split!r} has no videos {needed[split]}"
                               if split in needed else f"{videos}: no training videos")
        splits.append(FolderSplit(split, rows))
    left_out = [os.path.relpath(p, videos).replace(os.sep, '/') for p in sorted(others)]
    return FolderDataset(videos, root_abs, layout, names, splits, left_out, notes, val_fraction_used, seed_used,
                         test_fraction_used)


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
        'test_fraction': dataset.test_fraction,
        'seed': dataset.seed,
        'splits': splits,
        'labels': {'file': LABELS_FILE, 'classes': len(dataset.classes), 'sha256': sha256_of_text(labels)},
        'left_out': dataset.left_out,
    }
    files[MANIFEST_NAME] = json.dumps(manifest, indent=2, ensure_ascii=False) + '\n'
    return files


def summary_lines(dataset: FolderDataset) -> List[str]:
    lines = [f"{dataset.videos}: {len(dataset.classes)} classes ({dataset.layout}"
             + (f", val fraction {dataset.val_fraction:g}, test fraction {dataset.test_fraction:g}, "
                f"seed {dataset.seed}" if dataset.val_fraction else '')
             + ')']
    for s in dataset.splits:
        lines.append(f"{s.name}: {len(s.rows)} videos, {len({label for _, label in s.rows})} classes")
    lines += [f"note: {n}" for n in dataset.notes]
    if dataset.left_out:
        lines.append(f"left out {len(dataset.left_out)} file(s) that are not videos "
                     f"({' '.join(FOLDER_EXTENSIONS)}): {', '.join(_shown(p) for p in dataset.left_out[:SHOWN])}"
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
    parser.add_argument('--test-fraction', type=float, default=DEFAULT_TEST_FRACTION,
                        help='share of each class held out for test.csv, the list the final test of best.pth runs '
                             f'on (default {DEFAULT_TEST_FRACTION:g}; 0: no test split); with train/ and val/ '
                             'folders, a test/ folder is the test split')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split (default 0)')
    parser.add_argument('--root', default='', metavar='DIR',
                        help='write paths relative to DIR (default: --videos); set DATA.ROOT to it')
    parser.add_argument('--overwrite', action='store_true', help='replace output files that hold other lists')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dataset = prepare_folder(args.videos, args.val_fraction, args.seed, args.root, args.test_fraction)
        for line in summary_lines(dataset):
            print(line)
        written, _ = write_outputs(args.out, render_folder(dataset), overwrite=args.overwrite)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:   # --out read-only, on a full disk, or under a file: nothing was written
        print(f"error: {err.filename or args.out}: {write_error_reason(err)} (writing the lists to --out "
              f"{args.out}; nothing was written)", file=sys.stderr)
        return 2
    if written:
        print(f"wrote {', '.join(written)} in {args.out}; the paths are relative to {dataset.root}, the root "
              f"recorded in its {MANIFEST_NAME} (used when DATA.ROOT is ''): scripts/finetune.sh {args.out} "
              f"CHECKPOINT")
    else:
        print(f"{args.out}: already up to date, nothing written")
    return 0
