"""From a dataset's official annotations and a video folder to the lists ``main.py`` reads.

Class names become ids through the published label list of ``labels/`` (the ids of the released heads);
a name the list does not have is an error, never a guessed id. Each listed video is looked up in the
video folder (``videos.VideoIndex``); missing ones are left out of the list and written to
``missing_<split>.txt``. Nothing is written when anything is wrong.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..annotations import AnnotationError, read_label_list
from .sources import (PrepareError, Reader, Source, SourceSplit, read_activitynet, read_diving48, read_kinetics,
                      read_ssv2)
from .videos import VideoIndex

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOWN = 5   # names / ids quoted in one error line


@dataclass(frozen=True)
class DatasetSpec:
    reader: Reader
    labels: str               # the published list in labels/


DATASETS: Dict[str, DatasetSpec] = {
    'kinetics400': DatasetSpec(read_kinetics, 'kinetics_400_labels.csv'),
    'kinetics600': DatasetSpec(read_kinetics, 'kinetics_600_labels.csv'),
    'ssv2': DatasetSpec(read_ssv2, 'ssv2_174_labels.csv'),
    'diving48': DatasetSpec(read_diving48, 'diving_48_labels.csv'),
    'activitynet': DatasetSpec(read_activitynet, 'activitynet_200_labels.csv'),
}


@dataclass
class PreparedSplit:
    """One split after mapping names to ids and finding videos."""
    name: str
    source: str
    listed: int
    rows: List[Tuple[str, int]]                   # (path as written in the list, class id), sorted by path
    missing: List[Tuple[str, str]]                # (key, class name) of listed videos without a file
    duplicates: int = 0                           # repeated identical entries, listed once

    @property
    def file(self) -> str:
        return f'{self.name}.csv'

    @property
    def missing_file(self) -> str:
        return f'missing_{self.name}.txt'


@dataclass
class Prepared:
    dataset: str
    labels_file: str                              # the label list read
    labels_path: str                              # the same for display: labels/... inside the repository
    num_classes: int
    splits: List[PreparedSplit]
    notes: List[str] = field(default_factory=list)
    video_files: int = 0                          # video files found under the video folder


def _quote(items: Sequence[str]) -> str:
    shown = ', '.join(repr(x) for x in items[:SHOWN])
    return shown + (f', ... ({len(items)} in all)' if len(items) > SHOWN else '')


def display_path(path: str) -> str:
    """A path inside the repository relative to it (``labels/...``), any other path absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, REPO)
    return full if rel.startswith('..') else rel.replace(os.sep, '/')


def default_labels(dataset: str) -> str:
    return os.path.join(REPO, 'labels', DATASETS[dataset].labels)


def compare_official_ids(source: Source, names: List[str], labels_path: str) -> Optional[str]:
    """A note on how the dataset's own name -> id table relates to the label list (whose ids are used)."""
    if source.official_ids is None:
        return None
    ours = {name: i for i, name in enumerate(names)}
    if source.official_ids == ours:
        return f"{source.official_ids_source}: same {len(ours)} names and ids as {labels_path}"
    moved = sorted(n for n, i in source.official_ids.items() if n in ours and ours[n] != i)
    absent = sorted(n for n in source.official_ids if n not in ours)
    parts = []
    if moved:
        parts.append(f"{len(moved)} names with other ids ({_quote(moved)})")
    if absent:
        parts.append(f"{len(absent)} names not in the list ({_quote(absent)})")
    return (f"{source.official_ids_source} differs from {labels_path}: {'; '.join(parts) or 'other classes'}; "
            f"ids are taken from {labels_path} (the released heads use it)")


def _split_entries(split: SourceSplit, ids: Dict[str, int], labels_path: str) -> Tuple[list, int]:
    """``([(video, class id), ...], duplicates)``: unknown names and conflicting duplicates are errors."""
    unknown = list(dict.fromkeys(v.class_name for v in split.videos if v.class_name not in ids))
    if unknown:
        raise PrepareError(f"{split.source}: {len(unknown)} class name(s) of split {split.name!r} are not in "
                           f"{labels_path}: {_quote(unknown)}")
    by_key: Dict[str, Tuple] = {}
    conflicts = []
    for video in split.videos:
        seen = by_key.get(video.key)
        if seen is None:
            by_key[video.key] = (video, ids[video.class_name])
        elif seen[0].class_name != video.class_name:
            conflicts.append(video.key)
    if conflicts:
        raise PrepareError(f"{split.source}: {len(conflicts)} video(s) listed twice with different classes: "
                           f"{_quote(conflicts)}")
    return list(by_key.values()), len(split.videos) - len(by_key)


def _list_path(videos_dir: str, rel: str, root: str) -> str:
    """The path written in the list: under ``videos_dir`` as given, or relative to ``root`` (DATA.ROOT)."""
    path = os.path.normpath(os.path.join(videos_dir, rel))
    if root:
        path = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if path.startswith('..'):
            raise PrepareError(f"{os.path.join(videos_dir, rel)}: outside --root {root}")
    return path.replace(os.sep, '/')


def _find_videos(split: SourceSplit, pairs: list, index: VideoIndex, videos: str, root: str,
                 owner: Dict[str, Tuple[str, str]]) -> Tuple[List[Tuple[str, int]], List[Tuple[str, str]]]:
    """``(rows sorted by path, missing sorted by key)`` of one split; ``owner`` is shared by the splits."""
    rows, missing, ambiguous, shared = [], [], [], []
    for video, class_id in pairs:
        files = index.lookup(video.stems)
        if not files:
            missing.append((video.key, video.class_name))
            continue
        if len(files) > 1:
            ambiguous.append(f"{video.key}: {' and '.join(files)}")
            continue
        path = _list_path(videos, files[0], root)
        first = owner.setdefault(path, (split.name, video.key))
        if first != (split.name, video.key):
            shared.append(f"{path} ({first[1]} of {first[0]!r}, {video.key} of {split.name!r})")
        rows.append((path, class_id))
    if ambiguous:
        raise PrepareError(f"{videos}: {len(ambiguous)} video(s) of split {split.name!r} exist more than once "
                           f"({'; '.join(ambiguous[:SHOWN])}); point --videos at one copy")
    if shared:
        raise PrepareError(f"{split.source}: {len(shared)} file(s) found for two listed videos (the same "
                           f"video twice, or in two splits): {'; '.join(shared[:SHOWN])}")
    if not pairs:
        raise PrepareError(f"{split.source}: split {split.name!r} lists no videos")
    if not rows:
        example = index.example()
        found = f"found files such as {example}" if example else "found no video files"
        raise PrepareError(f"{videos}: none of the {len(pairs)} videos of split {split.name!r} ({split.source}) "
                           f"found; expected names such as {pairs[0][0].stems[0]}.mp4 (or .webm/.mkv/.avi, in "
                           f"any subfolder), {found}")
    return sorted(rows), sorted(missing)


def prepare(dataset: str, annotations: str, videos: str, labels: Optional[str] = None,
            root: str = '') -> Prepared:
    """Read the annotations, map names to ids, find the videos; raise PrepareError on anything wrong.

    Args:
        dataset: a key of ``DATASETS``.
        annotations: the official annotation folder (or file, where the dataset allows one).
        videos: the folder holding the videos (any layout below it).
        labels: the label list (default: the published one in labels/).
        root: when given, paths are written relative to it (set DATA.ROOT to it); else as under ``videos``.
    """
    if dataset not in DATASETS:
        raise PrepareError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    labels_file = labels or default_labels(dataset)
    labels_path = display_path(labels_file)
    try:
        names = read_label_list(labels_file)
    except AnnotationError as err:
        raise PrepareError(str(err)) from None
    ids = {name: i for i, name in enumerate(names)}
    if not os.path.exists(annotations):
        raise PrepareError(f"{annotations}: not found (--annotations)")
    source = DATASETS[dataset].reader(annotations)
    notes = list(source.notes)
    official = compare_official_ids(source, names, labels_path)
    if official:
        notes.append(official)
    entries = [(split, *_split_entries(split, ids, labels_path)) for split in source.splits]

    if not os.path.isdir(videos):
        raise PrepareError(f"{videos}: not a folder (--videos)")
    index = VideoIndex(videos)
    owner: Dict[str, Tuple[str, str]] = {}          # video path -> (split, key): one file, one listed video
    prepared = []
    for split, pairs, duplicates in entries:
        rows, missing = _find_videos(split, pairs, index, videos, root, owner)
        prepared.append(PreparedSplit(split.name, split.source, len(pairs) + duplicates, rows, missing, duplicates))
    return Prepared(dataset, labels_file, labels_path, len(names), prepared, notes, index.num_files)


def summary_lines(prepared: Prepared, out: str) -> List[str]:
    """What is printed per split: listed, found, missing (and where they are listed)."""
    lines = list(prepared.notes)
    for s in prepared.splits:
        line = f"{s.name}: listed {s.listed}, found {len(s.rows)}, missing {len(s.missing)}"
        if s.missing:
            line += f" (listed in {os.path.join(out, s.missing_file)})"
        if s.duplicates:
            line += f", {s.duplicates} repeated entries listed once"
        lines.append(line + f"  [{s.source}]")
    counts = collections.Counter(label for s in prepared.splits for _, label in s.rows)
    lines.append(f"classes with videos: {len(counts)} of {prepared.num_classes} ({prepared.labels_path})")
    return lines
