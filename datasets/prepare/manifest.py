"""``manifest.json`` of a prepared dataset, and the check ``main.py`` logs at start.

``python -m datasets.prepare`` writes, beside the annotation files, a manifest with the number of videos
and the sha256 of every list it wrote (and of the label list used). Two people who evaluate on lists with
the same sha256 evaluate on the same videos with the same labels. ``check_list(path)`` describes an
annotation file and compares it with the manifest beside it, for the training/evaluation log.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..annotations import MANIFEST_NAME, AnnotationError, parse_annotation_lines


def sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_text(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def describe_list(path: str) -> Tuple[int, str]:
    """``(number of videos, sha256 of the file's bytes)`` of an annotation file (.csv/.txt lines).

    Raises:
        AnnotationError: the file is missing or a line is malformed (as ``read_annotations`` would).
    """
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found")
    with open(path, 'rb') as f:
        data = f.read()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {err.start})") from None
    videos = parse_annotation_lines(text.splitlines(), path)
    return len(videos), hashlib.sha256(data).hexdigest()


@dataclass
class ListCheck:
    """An annotation file compared with the manifest beside it."""
    path: str
    videos: int
    sha256: str
    status: str                        # 'match', 'differs', 'no manifest', 'not in manifest', 'bad manifest'
    manifest: Optional[str] = None     # the manifest's path when there is one
    split: Optional[str] = None        # the manifest's split that names this file
    expected: Optional[Dict[str, Any]] = None
    detail: str = ''
    labels_match: Optional[bool] = None  # the label list given equals the manifest's (None: not compared)

    @property
    def message(self) -> str:
        """One line for the log."""
        head = f"{self.path}: {self.videos} videos, sha256 {self.sha256}"
        if self.labels_match is False:
            head += (f"; the label list differs from the one its ids were made with ({self.manifest}: "
                     f"{self.detail})")
        if self.status == 'match':
            return f"{head} (as in {self.manifest}, split {self.split!r})"
        if self.status == 'differs':
            return (f"{head} DIFFERS from {self.manifest}, split {self.split!r} ({self.expected.get('videos')} "
                    f"videos, sha256 {self.expected.get('sha256')}): the file was edited after it was prepared")
        if self.status == 'no manifest':
            return f"{head} (no {MANIFEST_NAME} beside it)"
        if self.status == 'not in manifest':
            return f"{head} (not one of the lists of {self.manifest})"
        return f"{head} ({self.manifest} unreadable: {self.detail})"


def read_manifest(path: str) -> Dict[str, Any]:
    """A manifest as written by ``datasets.prepare``; ValueError with the reason when it is not one."""
    with open(path, 'r', encoding='utf-8') as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get('splits'), dict):
        raise ValueError("expected an object with 'splits'")
    return manifest


def check_list(path: str, label_list: Optional[str] = None) -> ListCheck:
    """Describe ``path`` and compare it with ``manifest.json`` in its folder (matched by file name).

    With ``label_list`` (DATA.LABEL_LIST), also whether it is the list the ids were made with (by sha256):
    class names in reports are only right when it is. A missing, unreadable or unrelated manifest is
    reported in the result, never raised: the check is for the log. Raises AnnotationError only when the
    list itself is missing or malformed.
    """
    videos, digest = describe_list(path)
    manifest_path = os.path.join(os.path.dirname(path), MANIFEST_NAME)
    check = ListCheck(path, videos, digest, 'no manifest')
    if not os.path.isfile(manifest_path):
        return check
    check.manifest = manifest_path
    try:
        manifest = read_manifest(manifest_path)
    except (OSError, ValueError) as err:
        check.status, check.detail = 'bad manifest', str(err)
        return check
    labels = manifest.get('labels')
    if label_list and isinstance(labels, dict) and labels.get('sha256') and os.path.isfile(label_list):
        check.labels_match = sha256_of_file(label_list) == labels['sha256']
        if not check.labels_match:
            check.detail = f"{labels.get('file')}, sha256 {labels['sha256']}; given {label_list}"
    name = os.path.basename(path)
    for split, entry in manifest['splits'].items():
        if isinstance(entry, dict) and entry.get('file') == name:
            check.split, check.expected = split, entry
            same = entry.get('sha256') == digest and entry.get('videos') == videos
            check.status = 'match' if same else 'differs'
            return check
    check.status = 'not in manifest'
    return check
