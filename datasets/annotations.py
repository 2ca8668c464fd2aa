"""Annotation files (one video per line) and class-name lists.

Annotation lines are ``path,label`` (the original's format) or ``path label`` (mmaction2's), labels
0-based. Differences from the original (spec 3.1):
* the line is split at the LAST comma (or the last run of whitespace), so paths containing commas or
  spaces work (the original split at every comma and crashed);
* an optional header line (e.g. ``path,label``) is skipped instead of crashing the int conversion; only a
  line of plain words counts as one (no ``.`` or ``/``), so a malformed first data line such as
  ``a.mp4,one`` is an error, not a silently dropped sample;
* blank lines and lines starting with ``#`` are skipped;
* a malformed line fails with ``file:line: what was expected``; a label outside ``[0, NUM_CLASSES)``
  is an error instead of a silently wrong one-hot target;
* ``.json`` annotations (a list of ``{"filename": ..., "label": int or [int]}``, mmaction2's video
  format) load (the original's JSON path crashed). The original's tar mode (".tar" in DATA.ROOT) is
  not supported.

Paths are joined as in the original: ``os.path.join(realpath(ROOT), path)`` when ROOT is an existing
directory, ``os.path.join(ROOT, path)`` otherwise, the path as written when ROOT is ''; an absolute
path in the file ignores ROOT.

Label lists (``labels/*.csv``) are ``id,name`` with a header; names may contain commas (SSv2), so the
line is split at the FIRST comma. Ids must be 0..N-1 in order.
"""
from __future__ import annotations

import json
import os
import re
from typing import List, Optional, Tuple

Sample = Tuple[str, int]

# a header is column names: words, separated by commas or spaces; a path has a '.' or a '/'
_HEADER = re.compile(r'[A-Za-z_][\w\s,\-]*')


class AnnotationError(ValueError):
    """An annotation or label-list file is not in the expected format."""


def join_root(root: str, path: str) -> str:
    """The original's path rule: realpath(ROOT) if it is a directory, '' = as written, absolute wins."""
    if not root:
        return path
    if os.path.isdir(root):
        root = os.path.realpath(root)
    return os.path.join(root, path)


def _parse_int(text: str) -> Optional[int]:
    text = text.strip()
    if text.lstrip('+-').isdigit():
        return int(text)
    return None


def _split_line(line: str) -> Optional[Tuple[str, int]]:
    """``(path, label)`` of one line, or None when no integer label can be found at its end."""
    head, sep, tail = line.rpartition(',')
    if sep and head.strip() and _parse_int(tail) is not None:
        return head.strip(), _parse_int(tail)
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and _parse_int(parts[1]) is not None:
        return parts[0].strip(), _parse_int(parts[1])
    return None


def _parse_lines(lines, source: str) -> List[Tuple[str, int, int]]:
    """``[(path, label, line_number), ...]``; the first content line may be a header."""
    samples = []
    first_content_line = True
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip().lstrip('\ufeff')
        if not line or line.startswith('#'):
            continue
        parsed = _split_line(line)
        if parsed is None:
            if first_content_line and _HEADER.fullmatch(line):   # e.g. 'path,label' or 'video label'
                first_content_line = False
                continue
            raise AnnotationError(f"{source}:{lineno}: expected 'path,label' or 'path label' with an "
                                  f"integer label, got {raw.rstrip()!r}")
        first_content_line = False
        samples.append((parsed[0], parsed[1], lineno))
    return samples


def parse_annotation_lines(lines, source: str = '<annotations>') -> List[Sample]:
    """Parse annotation text lines (no ROOT joining, no label range check); see the module docstring."""
    return [(path, label) for path, label, _ in _parse_lines(lines, source)]


def _read_json(path: str) -> List[Sample]:
    with open(path, 'r') as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise AnnotationError(f"{path}: expected a JSON list of {{'filename': ..., 'label': ...}} records")
    samples = []
    for i, rec in enumerate(records):
        label = rec.get('label') if isinstance(rec, dict) else None
        if isinstance(label, list) and len(label) == 1:
            label = label[0]
        if not isinstance(rec, dict) or 'filename' not in rec or not isinstance(label, int):
            raise AnnotationError(f"{path}: record {i}: expected {{'filename': str, 'label': int or [int]}}, "
                                  f"got {rec!r}")
        samples.append((rec['filename'], label))
    return samples


def read_annotations(path: str, root: str = '', num_classes: Optional[int] = None) -> List[Sample]:
    """Read an annotation file into ``[(video_path, label), ...]``.

    Args:
        path: the annotation file (.csv/.txt lines, or .json records).
        root: DATA.ROOT, joined in front of relative paths (see ``join_root``).
        num_classes: when given, every label must lie in ``[0, num_classes)``.
    """
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found")
    if path.endswith('.json'):
        records = [(video, label, f"{path}: record {i}") for i, (video, label) in enumerate(_read_json(path))]
    else:
        with open(path, 'r', encoding='utf-8') as f:
            records = [(video, label, f"{path}:{n}") for video, label, n in _parse_lines(f.read().splitlines(), path)]
    if not records:
        raise AnnotationError(f"{path}: no videos listed")
    if num_classes is not None:
        for video, label, where in records:
            if not 0 <= label < num_classes:
                raise AnnotationError(f"{where}: label {label} of {video!r} is outside [0, {num_classes}) "
                                      f"(DATA.NUM_CLASSES = {num_classes}; labels are 0-based)")
    return [(join_root(root, video), label) for video, label, _ in records]


def read_label_list(path: str) -> List[str]:
    """Class names by id from an ``id,name`` CSV (header line; names may contain commas).

    Raises:
        AnnotationError: missing file, a line without a comma or an integer id, ids not 0..N-1 in order.
    """
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: label list not found (DATA.LABEL_LIST)")
    with open(path, 'r', encoding='utf-8') as f:
        lines = f.read().splitlines()
    names: List[str] = []
    seen_content = False
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip().lstrip('\ufeff')
        if not line:
            continue
        head, sep, name = line.partition(',')
        class_id = _parse_int(head)
        if not seen_content and class_id is None:   # the 'id,name' header
            seen_content = True
            continue
        seen_content = True
        if not sep or class_id is None:
            raise AnnotationError(f"{path}:{lineno}: expected 'id,name' with an integer id, got {raw!r}")
        if class_id != len(names):
            raise AnnotationError(f"{path}:{lineno}: expected id {len(names)} (ids must be 0..N-1 in order), "
                                  f"got {class_id}")
        names.append(name.strip().strip('"'))
    if not names:
        raise AnnotationError(f"{path}: no classes listed")
    return names
