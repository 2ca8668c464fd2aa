"""Find the listed videos in a folder: one scan, then lookups by file stem.

The folder is walked once (``walk_files``: symbolic links followed, so ``data/<dataset>/videos`` may link to
another disk, but every real folder and file is visited once and a link back to a folder above it is an
error naming the link); every file with a video extension is indexed by its name without extension,
wherever it lies (flat, per split, per class). A listed video is found when one of its candidate stems matches (see
``ListedVideo.stems``: e.g. Kinetics ``<youtube_id>_<start>_<end>`` first, then ``<youtube_id>``).
Hidden files (``._x.mp4`` resource forks copied from macOS, partial downloads) are ignored.
"""
from __future__ import annotations

import collections
import os
from typing import Dict, List, Optional, Sequence, Tuple

from .sources import PrepareError

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi')

FileId = Tuple[int, int]   # (st_dev, st_ino): one real file, however many links or hard links lead to it


def file_id(path: str) -> FileId:
    """The identity of the real file behind ``path`` (links followed)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk_files(folder: str) -> List[Tuple[str, FileId]]:
    """``[(path, file id), ...]`` of every non-hidden file under ``folder``, sorted, links followed.

    Each real folder is entered once and each real file is listed once (by the first path that reaches it in
    sorted order), so links that lead to the same place twice neither duplicate videos nor multiply the
    walk. Broken links are left out.

    Raises:
        PrepareError: a link leads to a folder above it (a loop), naming the link and its target.
    """
    files: List[Tuple[str, FileId]] = []
    seen_files: set = set()
    seen_dirs: set = set()

    def visit(path: str, ancestors: Tuple[str, ...]) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:   # a folder that cannot be listed holds nothing this walk can use
            return
        for entry in entries:
            if entry.name.startswith('.'):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                real = os.path.realpath(entry.path)
                if real in ancestors:
                    what = (f"symbolic link to {os.readlink(entry.path)!r}" if entry.is_symlink()
                            else "folder (a bind mount?)")
                    raise PrepareError(
                        f"{entry.path}: {what} leads back to {real}, a folder "
                        f"that contains it (a loop: the walk would list the same videos again and again); remove the "
                        f"link or point it to a folder that does not contain it")
                if real not in seen_dirs:
                    seen_dirs.add(real)
                    visit(entry.path, ancestors + (real,))
                continue
            try:
                key = file_id(entry.path)
            except OSError:   # a broken link
                continue
            if key not in seen_files:
                seen_files.add(key)
                files.append((entry.path, key))

    top = os.path.realpath(folder)
    seen_dirs.add(top)
    # the folders above ``folder`` count as ancestors too: a link to one of them would walk ``folder`` again
    above, parents = top, [top]
    while os.path.dirname(above) != above:
        above = os.path.dirname(above)
        parents.append(above)
    visit(folder, tuple(reversed(parents)))
    return sorted(files)


class VideoIndex:
    """Video files under ``folder`` by stem; paths relative to ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._by_stem: Dict[str, List[str]] = collections.defaultdict(list)
        self.num_files = 0
        for path, _ in walk_files(folder):
            stem, ext = os.path.splitext(os.path.basename(path))
            if ext.lower() not in VIDEO_EXTENSIONS:
                continue
            self._by_stem[stem].append(os.path.relpath(path, folder))
            self.num_files += 1

    def lookup(self, stems: Sequence[str]) -> List[str]:
        """The files of the first stem that has any (several = the same video stored twice), else []."""
        for stem in stems:
            found = self._by_stem.get(stem)
            if found:
                return sorted(found)
        return []

    def example(self) -> Optional[str]:
        """One indexed file, for error messages."""
        for paths in self._by_stem.values():
            return paths[0]
        return None
