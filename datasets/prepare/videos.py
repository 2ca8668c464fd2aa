"""Find the listed videos in a folder: one scan, then lookups by file stem.

The folder is walked once (symbolic links followed, so ``data/<dataset>/videos`` may link to another
disk); every file with a video extension is indexed by its name without extension, wherever it lies
(flat, per split, per class). A listed video is found when one of its candidate stems matches (see
``ListedVideo.stems``: e.g. Kinetics ``<youtube_id>_<start>_<end>`` first, then ``<youtube_id>``).
Hidden files (``._x.mp4`` resource forks copied from macOS, partial downloads) are ignored.
"""
from __future__ import annotations

import collections
import os
from typing import Dict, List, Optional, Sequence

VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi')


class VideoIndex:
    """Video files under ``folder`` by stem; paths relative to ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._by_stem: Dict[str, List[str]] = collections.defaultdict(list)
        self.num_files = 0
        for parent, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            for name in files:
                stem, ext = os.path.splitext(name)
                if name.startswith('.') or ext.lower() not in VIDEO_EXTENSIONS:
                    continue
                self._by_stem[stem].append(os.path.relpath(os.path.join(parent, name), folder))
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
