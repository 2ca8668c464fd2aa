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
  format) load (the original's JSON path crashed); a record of another shape is named by its line. The
  original's tar mode (".tar" in DATA.ROOT) is not supported.
* files are read as UTF-8, with or without a byte-order mark; another encoding (Latin-1, UTF-16) fails
  with ``file:line`` of the first byte that is not UTF-8 instead of a ``UnicodeDecodeError``;
* a video listed twice is an error in an evaluation list (it would be scored twice) and a warning with
  the count in a training list (the rows are kept: the video is sampled more often, as in the original).

Paths are joined as in the original: ``os.path.join(realpath(ROOT), path)`` when ROOT is an existing
directory, ``os.path.join(ROOT, path)`` otherwise, the path as written when ROOT is ''; an absolute
path in the file ignores ROOT. A list written by ``datasets.prepare`` carries its root in the
``manifest.json`` beside it: when DATA.ROOT is '' that root is used (``list_root``), so a prepared folder
works without setting DATA.ROOT.

Label lists (``labels/*.csv``) are ``id,name`` with a header; names may contain commas (SSv2), so the
line is split at the FIRST comma. Ids must be 0..N-1 in order.
"""
from __future__ import annotations

import codecs
import json
import logging
import os
import re
from typing import List, Optional, Tuple

Sample = Tuple[str, int]

# a header is column names: words, separated by commas or spaces; a path has a '.' or a '/'
_HEADER = re.compile(r'[A-Za-z_][\w\s,\-]*')


_logger = logging.getLogger(__name__)

DUPLICATE_POLICIES = ('error', 'warn')


class AnnotationError(ValueError):
    """An annotation or label-list file is not in the expected format."""


def read_text(path: str) -> str:
    """The text of an annotation or label-list file: UTF-8, a leading byte-order mark dropped.

    Raises:
        AnnotationError: ``path:line: ...`` naming the encoding found (UTF-16, NUL bytes, the first byte that is
            not UTF-8, e.g. Latin-1) and what is read.
    """
    with open(path, 'rb') as f:
        data = f.read()
    expected = 'annotation files are read as UTF-8 (with or without BOM): save the file as UTF-8'
    for bom, name in ((codecs.BOM_UTF32_LE, 'UTF-32'), (codecs.BOM_UTF32_BE, 'UTF-32'),
                      (codecs.BOM_UTF16_LE, 'UTF-16'), (codecs.BOM_UTF16_BE, 'UTF-16')):
        if data.startswith(bom):
            raise AnnotationError(f"{path}:1: {name} text (byte-order mark {bom.hex()}); {expected}")
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    if b'\x00' in body:
        line = body.count(b'\n', 0, body.index(b'\x00')) + 1
        raise AnnotationError(f"{path}:{line}: NUL bytes (UTF-16 without a byte-order mark, or not text); {expected}")
    try:
        return body.decode('utf-8')
    except UnicodeDecodeError as e:
        line = body.count(b'\n', 0, e.start) + 1
        column = e.start - (body.rfind(b'\n', 0, e.start) + 1) + 1
        raise AnnotationError(f"{path}:{line}: byte 0x{body[e.start]:02x} at column {column} is not UTF-8 (Latin-1 or "
                              f"Windows-1252 text?); {expected}") from None


def join_root(root: str, path: str) -> str:
    """The original's path rule: realpath(ROOT) if it is a directory, '' = as written, absolute wins."""
    if not root:
        return path
    if os.path.isdir(root):
        root = os.path.realpath(root)
    return os.path.join(root, path)


MANIFEST_NAME = 'manifest.json'   # written by datasets.prepare beside the lists it describes


def manifest_root(annotation_file: str) -> Tuple[str, str]:
    """``(root, manifest path)`` recorded by ``datasets.prepare`` for ``annotation_file``, or ``('', '')``.

    Only a manifest beside the file that names it among its splits counts; an unreadable or foreign one
    gives ``('', '')`` (the list is then read as it always is, against DATA.ROOT).
    """
    manifest = os.path.join(os.path.dirname(annotation_file), MANIFEST_NAME)
    try:
        with open(manifest, 'r', encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError):
        return '', ''
    splits = record.get('splits') if isinstance(record, dict) else None
    root = record.get('root') if isinstance(record, dict) else None
    if not isinstance(splits, dict) or not isinstance(root, str) or not root:
        return '', ''
    name = os.path.basename(annotation_file)
    if any(isinstance(entry, dict) and entry.get('file') == name for entry in splits.values()):
        return root, manifest
    return '', ''


def list_root(root: str, annotation_file: str) -> Tuple[str, str]:
    """``(root to join, where it comes from)``: DATA.ROOT when set, else the root of the list's manifest."""
    if root:
        return root, 'DATA.ROOT'
    found, manifest = manifest_root(annotation_file)
    if found:
        return found, manifest
    return '', 'DATA.ROOT'


def describe_root(root: str, origin: str = 'DATA.ROOT') -> str:
    """The root the videos were looked for under, for a "file not found" message: which one, and for a
    relative one the working directory it is relative to."""
    what = f"DATA.ROOT {root!r}" if origin == 'DATA.ROOT' else f"the root {root!r} of {origin} (DATA.ROOT '')"
    if not root:
        return f"DATA.ROOT '' (the listed paths as written, relative to the working directory {os.getcwd()})"
    if not os.path.isabs(root):
        return f"{what}, relative to the working directory {os.getcwd()}"
    return what


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


def _json_record_line(text: str, index: int) -> int:
    """The line on which record ``index`` of a top-level JSON list starts (only called to report an error)."""
    decoder, position = json.JSONDecoder(), text.index('[') + 1
    for _ in range(index + 1):
        while text[position] in ' \t\r\n,':
            position += 1
        start = position
        _, position = decoder.raw_decode(text, position)
    return text.count('\n', 0, start) + 1


def _read_json(path: str) -> List[Tuple[str, int, str]]:
    """``[(filename, label, 'path:line'), ...]`` of mmaction2's video format."""
    text = read_text(path)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(records, list):
        raise AnnotationError(f"{path}:1: expected a JSON list of {{'filename': ..., 'label': ...}} records, "
                              f"got a {type(records).__name__}")
    samples = []
    for i, rec in enumerate(records):
        label = rec.get('label') if isinstance(rec, dict) else None
        if isinstance(label, list) and len(label) == 1:
            label = label[0]
        filename = rec.get('filename') if isinstance(rec, dict) else None
        valid_label = isinstance(label, int) and not isinstance(label, bool)
        if not isinstance(filename, str) or not filename.strip() or not valid_label:
            shown = repr(rec)
            shown = shown if len(shown) <= 120 else shown[:117] + '...'
            raise AnnotationError(f"{path}:{_json_record_line(text, i)}: record {i}: expected {{'filename': str, "
                                  f"'label': int or [int]}}, got {shown}")
        samples.append((filename, label, f"{path}: record {i}"))
    return samples


def _check_duplicates(records: List[Tuple[str, int, str]], path: str, duplicates: str) -> None:
    """Videos listed more than once (after ROOT joining): an error (``duplicates='error'``) or one warning."""
    first_seen, repeats = {}, []
    for video, _, where in records:
        if video in first_seen:
            repeats.append((video, where, first_seen[video]))
        else:
            first_seen[video] = where
    if not repeats:
        return
    video, where, first = repeats[0]
    first = first[len(path) + 1:].strip()                    # '3' (a line) or 'record 0' (JSON)
    first = f"line {first}" if first.isdigit() else first
    if duplicates == 'error':
        raise AnnotationError(f"{where}: {video!r} is listed again (first at {first}); {len(repeats)} duplicate "
                              f"row(s): an evaluation list must name each video once (it is scored once per row)")
    _logger.warning(f"{path}: {len(repeats)} row(s) repeat a video listed earlier (the first: {where}, {video!r}, "
                    f"first at {first}); they are kept, so those videos are sampled more often")


def read_annotations(path: str, root: str = '', num_classes: Optional[int] = None,
                     duplicates: str = 'error') -> List[Sample]:
    """Read an annotation file into ``[(video_path, label), ...]``.

    Args:
        path: the annotation file (.csv/.txt lines, or .json records), UTF-8 with or without BOM.
        root: DATA.ROOT, joined in front of relative paths (see ``join_root``).
        num_classes: when given, every label must lie in ``[0, num_classes)``.
        duplicates: a video listed more than once is an ``'error'`` (evaluation lists) or a ``'warn'``ing
            with the count, the rows kept (training lists).
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates: expected one of {list(DUPLICATE_POLICIES)}, got {duplicates!r}")
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found")
    if path.endswith('.json'):
        records = _read_json(path)
    else:
        records = [(video, label, f"{path}:{n}") for video, label, n in _parse_lines(read_text(path).splitlines(), path)]
    if not records:
        raise AnnotationError(f"{path}: no videos listed")
    if num_classes is not None:
        for video, label, where in records:
            if not 0 <= label < num_classes:
                raise AnnotationError(f"{where}: label {label} of {video!r} is outside [0, {num_classes}) "
                                      f"(DATA.NUM_CLASSES = {num_classes}; labels are 0-based)")
    joined = [(join_root(root, video), label, where) for video, label, where in records]
    _check_duplicates(joined, path, duplicates)
    return [(video, label) for video, label, _ in joined]


def read_label_list(path: str) -> List[str]:
    """Class names by id from an ``id,name`` CSV (header line; names may contain commas).

    Raises:
        AnnotationError: missing file, a line without a comma or an integer id, ids not 0..N-1 in order.
    """
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: label list not found (DATA.LABEL_LIST)")
    lines = read_text(path).splitlines()
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
