"""Readers of the five datasets' official annotation files, as they are distributed.

Each reader turns one dataset's files into ``Source``: per split, the listed videos with their class
*name* (never an id: ids come from ``labels/`` so that they match the released heads) and the file
stems under which the video may be stored. Nothing here looks at the video folder or the label list.
"""
from __future__ import annotations

import collections
import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


class PrepareError(ValueError):
    """The annotations, videos, label list or output folder do not allow writing a correct dataset."""


@dataclass(frozen=True)
class ListedVideo:
    """One video of an official annotation file."""
    key: str                  # the dataset's own identifier (Kinetics: youtube_id_start_end)
    class_name: str           # as written in the annotation file (after the dataset's own rule, e.g. SSv2's)
    stems: Tuple[str, ...]    # file names without extension that this video may have, in order of preference


@dataclass
class SourceSplit:
    """The videos of one output split and the annotation file they come from."""
    name: str                 # output split: 'train', 'val' or (Diving-48) 'test'
    source: str               # the annotation file, for messages
    videos: List[ListedVideo]


@dataclass
class Source:
    """What a reader found: the splits, notes to print, and the dataset's own name -> id table if any."""
    splits: List[SourceSplit]
    notes: List[str] = field(default_factory=list)
    official_ids: Optional[Dict[str, int]] = None   # SSv2 labels.json, Diving-48 vocabulary index
    official_ids_source: str = ''


def _load_json(path: str) -> Any:
    try:
        with open(path, 'r', encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PrepareError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except OSError as e:
        raise PrepareError(f"{path}: cannot read ({e.strerror})") from None


def _find(folder: str, names: Sequence[str], required: bool = True) -> Optional[str]:
    """The one file of ``names`` present in ``folder`` (None if none and not required)."""
    present = [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
    if len(present) > 1:
        raise PrepareError(f"{folder}: both {' and '.join(os.path.basename(p) for p in present)} exist; "
                           f"keep only the one to use")
    if not present and required:
        raise PrepareError(f"{folder}: expected {' or '.join(names)} (the official annotation file)")
    return present[0] if present else None


def _require_folder(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise PrepareError(f"{path}: expected the folder with {what} (--annotations)")
    return path


def _clean_name(name: str) -> str:
    """Class names as written, without surrounding spaces or stray quotes (some CSV exports add them)."""
    return name.strip().strip('"').strip()


# ------------------------------------------------------------------------------------------------------------
# Kinetics-400 / -600
# ------------------------------------------------------------------------------------------------------------
KINETICS_COLUMNS = ('label', 'youtube_id', 'time_start', 'time_end')
KINETICS_SPLIT_VALUES = {'train': 'train', 'val': 'val', 'validate': 'val', 'validation': 'val'}


def _kinetics_time(text: str, path: str, line: int, column: str) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        raise PrepareError(f"{path}:{line}: {column} {text!r} is not a number of seconds") from None


def _read_kinetics_csv(path: str) -> List[Tuple[Optional[str], ListedVideo]]:
    """``[(split column or None, video), ...]`` of one Kinetics CSV."""
    with open(path, 'r', encoding='utf-8', newline='') as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lstrip('\ufeff') for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        lacking = [c for c in KINETICS_COLUMNS if c not in columns]
        if lacking:
            raise PrepareError(f"{path}: expected the columns {','.join(KINETICS_COLUMNS)}[,split], "
                               f"found {','.join(columns) or 'nothing'} (a test file without labels cannot be used)")
        rows = []
        for row in reader:
            line = reader.line_num
            youtube_id = (row['youtube_id'] or '').strip()
            if not youtube_id:
                raise PrepareError(f"{path}:{line}: empty youtube_id")
            start = _kinetics_time(row['time_start'], path, line, 'time_start')
            end = _kinetics_time(row['time_end'], path, line, 'time_end')
            key = f"{youtube_id}_{start:06d}_{end:06d}"
            split = row.get('split')
            rows.append((split.strip() if split else None,
                         ListedVideo(key, _clean_name(row['label'] or ''), (key, youtube_id))))
    return rows


def read_kinetics(annotations: str) -> Source:
    """Kinetics CSVs: a folder with train.csv and validate.csv (or val.csv), or one CSV split by its column."""
    if os.path.isfile(annotations):
        groups: Dict[str, List[ListedVideo]] = collections.defaultdict(list)
        ignored = collections.Counter()
        for split, video in _read_kinetics_csv(annotations):
            target = KINETICS_SPLIT_VALUES.get((split or '').lower())
            if target is None:
                if split is None:
                    raise PrepareError(f"{annotations}: a single annotation file needs a 'split' column "
                                       f"(train/val/validate/test) to tell the splits apart")
                ignored[split] += 1
                continue
            groups[target].append(video)
        notes = [f"{annotations}: {n} rows of split {s!r} not used" for s, n in sorted(ignored.items())]
        if 'train' not in groups or 'val' not in groups:
            raise PrepareError(f"{annotations}: expected rows of split 'train' and 'val' (or 'validate'), "
                               f"found {', '.join(sorted(groups)) or 'none'}")
        return Source([SourceSplit('train', annotations, groups['train']),
                       SourceSplit('val', annotations, groups['val'])], notes)
    folder = _require_folder(annotations, 'train.csv and validate.csv')
    train = _find(folder, ['train.csv'])
    val = _find(folder, ['validate.csv', 'val.csv'])
    notes = []
    if os.path.isfile(os.path.join(folder, 'test.csv')):
        notes.append(f"{os.path.join(folder, 'test.csv')}: not used (the published numbers are on the val split)")
    return Source([SourceSplit('train', train, [v for _, v in _read_kinetics_csv(train)]),
                   SourceSplit('val', val, [v for _, v in _read_kinetics_csv(val)])], notes)


# ------------------------------------------------------------------------------------------------------------
# Something-Something V2
# ------------------------------------------------------------------------------------------------------------
def ssv2_class_name(template: str) -> str:
    """SSv2's rule: an entry's class is its template with the placeholder brackets removed."""
    return template.replace('[', '').replace(']', '')


def _records(path: str, keys: Sequence[str]) -> List[Dict[str, Any]]:
    """The list of JSON objects in ``path``, each with ``keys``."""
    records = _load_json(path)
    if not isinstance(records, list):
        raise PrepareError(f"{path}: expected a JSON list of records with {', '.join(keys)}")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or any(k not in record for k in keys):
            raise PrepareError(f"{path}: record {i}: expected an object with {', '.join(keys)}, got {record!r:.200}")
    return records


def read_ssv2(annotations: str) -> Source:
    """SSv2 label files: train.json and validation.json (records id/label/template/placeholders), labels.json."""
    folder = _require_folder(annotations, 'labels.json, train.json and validation.json')
    prefix = 'something-something-v2-'
    splits = []
    for split, name in (('train', 'train.json'), ('val', 'validation.json')):
        path = _find(folder, [name, prefix + name])
        videos = [ListedVideo(str(r['id']).strip(), ssv2_class_name(str(r['template'])), (str(r['id']).strip(),))
                  for r in _records(path, ('id', 'template'))]
        splits.append(SourceSplit(split, path, videos))
    source = Source(splits)
    test = _find(folder, ['test.json', prefix + 'test.json'], required=False)
    if test:
        source.notes.append(f"{test}: not used (no labels)")
    labels = _find(folder, ['labels.json', prefix + 'labels.json'], required=False)
    if labels:
        table = _load_json(labels)
        try:
            source.official_ids = {ssv2_class_name(name): int(i) for name, i in table.items()}
        except (AttributeError, TypeError, ValueError):
            raise PrepareError(f"{labels}: expected a JSON object of class name -> id") from None
        source.official_ids_source = labels
    return source


# ------------------------------------------------------------------------------------------------------------
# Diving-48 (V2 annotations)
# ------------------------------------------------------------------------------------------------------------
def diving48_class_name(parts: Sequence[str]) -> str:
    """A vocabulary entry [take-off, somersaults, twists, flight] as named in labels/ (joined with '_')."""
    return '_'.join(parts)


def read_diving48(annotations: str) -> Source:
    """Diving48_vocab.json and Diving48_V2_{train,test}.json (records vid_name/label/start_frame/end_frame)."""
    folder = _require_folder(annotations, 'Diving48_vocab.json and Diving48_V2_{train,test}.json')
    vocab_path = _find(folder, ['Diving48_vocab.json'])
    vocab = _load_json(vocab_path)
    if not isinstance(vocab, list) or not all(isinstance(v, list) and all(isinstance(p, str) for p in v)
                                              for v in vocab):
        raise PrepareError(f"{vocab_path}: expected a JSON list of [take-off, somersaults, twists, flight] lists")
    names = [diving48_class_name(parts) for parts in vocab]
    splits = []
    for split in ('train', 'test'):
        path = _find(folder, [f'Diving48_V2_{split}.json'])
        videos = []
        for i, r in enumerate(_records(path, ('vid_name', 'label'))):
            label = r['label']
            if not isinstance(label, int) or not 0 <= label < len(names):
                raise PrepareError(f"{path}: record {i} ({r['vid_name']}): label {label!r} is not an index of "
                                   f"{vocab_path} (0..{len(names) - 1})")
            vid = str(r['vid_name']).strip()
            videos.append(ListedVideo(vid, names[label], (vid,)))
        splits.append(SourceSplit(split, path, videos))
    return Source(splits, official_ids={name: i for i, name in enumerate(names)}, official_ids_source=vocab_path)


# ------------------------------------------------------------------------------------------------------------
# ActivityNet v1.3
# ------------------------------------------------------------------------------------------------------------
ACTIVITYNET_SUBSETS = {'training': 'train', 'validation': 'val'}


def activitynet_video_label(annotations: Sequence[Dict[str, Any]]) -> str:
    """One class per untrimmed video: the most frequent label of its segments, ties going to the first listed."""
    counts = collections.Counter(_clean_name(str(a['label'])) for a in annotations)
    return counts.most_common(1)[0][0]   # most_common is stable: equal counts keep first-seen order


def read_activitynet(annotations: str) -> Source:
    """activity_net.v1-3.min.json: ``database`` {id: {subset, annotations: [{label, segment}], ...}}."""
    path = annotations
    if os.path.isdir(annotations):
        path = _find(annotations, ['activity_net.v1-3.min.json', 'activity_net.v1-3.json'])
    elif not os.path.isfile(annotations):
        raise PrepareError(f"{annotations}: expected activity_net.v1-3.min.json or the folder holding it")
    database = _load_json(path)
    database = database.get('database') if isinstance(database, dict) else None
    if not isinstance(database, dict):
        raise PrepareError(f"{path}: expected a JSON object with a 'database' of videos")
    groups: Dict[str, List[ListedVideo]] = {'train': [], 'val': []}
    skipped = collections.Counter()
    mixed = collections.Counter()
    for video_id, video in database.items():
        if not isinstance(video, dict) or 'subset' not in video:
            raise PrepareError(f"{path}: database[{video_id!r}]: expected an object with 'subset' and 'annotations'")
        split = ACTIVITYNET_SUBSETS.get(video['subset'])
        segments = video.get('annotations') or []
        if split is None or not segments:
            skipped[(video['subset'], 'no annotations' if split else 'no labels')] += 1
            continue
        if any(not isinstance(a, dict) or 'label' not in a for a in segments):
            raise PrepareError(f"{path}: database[{video_id!r}]: every annotation needs a 'label'")
        if len({_clean_name(str(a['label'])) for a in segments}) > 1:
            mixed[split] += 1
        groups[split].append(ListedVideo(video_id, activitynet_video_label(segments), (f'v_{video_id}', video_id)))
    notes = [f"{path}: {n} {subset} videos not used ({why})" for (subset, why), n in sorted(skipped.items())]
    notes += [f"{split}: {n} videos have segments of different classes; each takes its most frequent one"
              for split, n in sorted(mixed.items())]
    return Source([SourceSplit('train', path, groups['train']), SourceSplit('val', path, groups['val'])], notes)


Reader = Callable[[str], Source]
