"""What an ``OSError`` met while writing an output folder means to the user, in a few words.

The commands that write a folder of results (``datasets.prepare``, ``tools.extract_features``) report a
folder they cannot write as one line, ``error: <path>: <reason> (<flag>)``, exit status 2. ``strerror`` alone
says "Not a directory" or "No space left on device"; these reasons also say what to do about it.
"""
from __future__ import annotations

import errno

_REASONS = {
    errno.ENOSPC: 'the disk is full (no space left on the device): free space or choose a folder on another disk',
    errno.EDQUOT: 'the disk quota is used up: free space or choose a folder on another disk',
    errno.EROFS: 'the file system is read-only: choose a writable folder',
    errno.EACCES: 'permission denied: choose a folder you may write to',
    errno.EPERM: 'permission denied: choose a folder you may write to',
    errno.ENOTDIR: 'a part of the path is a file, not a folder: choose another path',
    errno.EEXIST: 'exists and is not a folder: choose another path',
    errno.ENAMETOOLONG: 'the name is too long for the file system',
}


def write_error_reason(err: OSError) -> str:
    """A short reason for a failed write, with what to do; ``strerror`` for the errors not listed above."""
    return _REASONS.get(err.errno, err.strerror or str(err))


def is_disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)
