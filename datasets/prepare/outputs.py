"""The files a prepared dataset consists of, and writing them without ever leaving a half-written one.

Per split ``<split>.csv`` (``path,label`` lines, sorted by path, read by ``datasets.read_annotations``) and
``missing_<split>.txt`` (the listed videos without a file, one ``key<TAB>class name`` per line), then
``manifest.json`` (last, so a manifest never describes lists that are not there yet). Every file is first
written to a temporary file in the same folder; only when all of them are written (a full disk or a
read-only folder fails here, and the temporary files are removed) are they renamed over the targets, so a
failed run leaves the folder as it was instead of new lists beside old ones.

An output folder that already holds any of these files with other content is refused unless
``overwrite``: a second run over a finished dataset must not silently replace lists someone evaluated on.
With ``overwrite``, the lists the old manifest names that the new run does not write (a ``test.csv`` of an
earlier split) are removed, so no config still pointing at them reads videos that are now elsewhere.
A run that would produce the same files (the manifest's ``created`` time aside) writes nothing.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, List, Tuple

from utils.fs import fsync_dir, temp_path

from .build import Prepared, display_path
from .manifest import MANIFEST_NAME, read_manifest, sha256_of_file, sha256_of_text
from .sources import PrepareError


def render(prepared: Prepared, annotations: str, videos: str, root: str) -> Dict[str, str]:
    """``{file name: text}`` of every output file, the manifest last."""
    files: Dict[str, str] = {}
    splits: Dict[str, Any] = {}
    for s in prepared.splits:
        text = ''.join(f"{path},{label}\n" for path, label in s.rows)
        files[s.file] = text
        files[s.missing_file] = (f"# {len(s.missing)} videos listed in {s.source} but not found under {videos} "
                                 f"(key<TAB>class name)\n" + ''.join(f"{k}\t{n}\n" for k, n in s.missing))
        splits[s.name] = {'file': s.file, 'videos': len(s.rows), 'sha256': sha256_of_text(text),
                          'listed': s.listed, 'missing': len(s.missing), 'missing_file': s.missing_file,
                          'source': s.source}
    manifest = {
        'dataset': prepared.dataset,
        'created': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'annotations': annotations,
        'videos': videos,
        'root': root,
        'splits': splits,
        'labels': {'file': prepared.labels_path, 'classes': prepared.num_classes,
                   'sha256': sha256_of_file(prepared.labels_file)},
    }
    files[MANIFEST_NAME] = json.dumps(manifest, indent=2) + '\n'
    return files


def _same_manifest(path: str, text: str) -> bool:
    try:
        old = read_manifest(path)
    except (OSError, ValueError):
        return False
    new = json.loads(text)
    old.pop('created', None)
    new.pop('created', None)
    return old == new


def _differs(path: str, text: str) -> bool:
    if os.path.basename(path) == MANIFEST_NAME:
        return not _same_manifest(path, text)
    with open(path, 'r', encoding='utf-8', newline='') as f:
        return f.read() != text


def write_outputs(out: str, files: Dict[str, str], overwrite: bool = False) -> Tuple[List[str], List[str]]:
    """Write ``files`` into ``out``; ``(written, unchanged)`` file names.

    Raises:
        PrepareError: a file exists with other content and ``overwrite`` is False (nothing is written).
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise PrepareError(f"{out}: exists and is not a folder (--out)")
    existing = [name for name in files if os.path.isfile(os.path.join(out, name))]
    changed = [name for name in existing if _differs(os.path.join(out, name), files[name])]
    if changed and not overwrite:
        raise PrepareError(f"{display_path(out)}: {', '.join(changed)} already exist with other content; "
                           f"pass --overwrite to replace them")
    to_write = [name for name in files if name not in existing or name in changed]
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    temps: List[Tuple[str, str]] = []
    try:
        for name in to_write:
            target = os.path.join(out, name)
            temps.append((temp_path(target), target))
            with open(temps[-1][0], 'xb') as f:
                f.write(files[name].encode('utf-8'))
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        for tmp, _ in temps:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
        if created:   # a folder this call made holds nothing now
            try:
                os.rmdir(out)
            except OSError:
                pass
        raise
    stale = _stale_lists(out, files) if overwrite else []
    for tmp, target in temps:   # in order, the manifest last; renames need no space
        os.replace(tmp, target)
    for name in stale:   # e.g. a test.csv of an earlier split, which a config pointing at it would still read
        os.remove(os.path.join(out, name))
    fsync_dir(out)
    return to_write, [name for name in files if name not in to_write]


def _stale_lists(out: str, files: Dict[str, str]) -> List[str]:
    """Lists the manifest in ``out`` names that the new files do not have (removed when overwriting)."""
    try:
        old = read_manifest(os.path.join(out, MANIFEST_NAME))
    except (OSError, ValueError):
        return []
    names = set()
    for entry in old['splits'].values():
        if isinstance(entry, dict):
            names.update(v for k, v in entry.items() if k in ('file', 'missing_file') and isinstance(v, str))
    return sorted(n for n in names if n not in files and os.path.basename(n) == n
                  and os.path.isfile(os.path.join(out, n)))
