"""File-system writes that never leave a partial file under the final name.

One implementation for everything the project writes: checkpoints (``engine/checkpoint/saving.py``), the
config and environment files, ``eval_results.json`` / ``predictions.csv`` (``engine/evaluator.py``), the
names a checkpoint is published under, and release files (``tools/publish.py``, which never replaces a file).

The pattern: write a temporary file in the destination folder, flush and fsync it, ``os.replace`` it over
the destination (atomic on POSIX and Windows), then fsync the folder so that the rename itself survives a
power cut. A reader sees the old file or the new one, never a partial one.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
from typing import BinaryIO, Callable, Optional

_logger = logging.getLogger(__name__)


def fsync_dir(folder: str) -> None:
    """fsync a folder (makes a rename durable); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: str) -> str:
    """A fresh temporary name beside ``path``: ``.NAME.PID.HEX.tmp`` (the pid lets a later writer tell
    a temporary of a killed process from one being written right now)."""
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp')


def remove_stale_temp_files(path: str) -> None:
    """Delete temporaries of ``path`` left by processes that were killed mid-write (and are no longer alive)."""
    folder, base = os.path.split(os.path.abspath(path))
    pattern = re.compile(rf'\.{re.escape(base)}\.(\d+)\.[0-9a-f]+\.tmp')
    for name in os.listdir(folder):
        match = pattern.fullmatch(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # still running: maybe writing right now
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        try:
            os.remove(os.path.join(folder, name))
            _logger.info('removed %s, left by an interrupted write', name)
        except FileNotFoundError:
            pass


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` atomically with what ``write(file)`` writes into a binary file object.

    A failure (also KeyboardInterrupt) removes the temporary file and leaves ``path`` as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    # The descriptor is opened inside the try: a Ctrl-C handled as os.open returns (the file exists, the
    # assignment has not happened yet) must still remove the temporary, which is found by its name.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))


def _link_or_copy(src: str, dst: str) -> None:
    """Make ``dst`` (which must not exist) a hard link to ``src``, or a fsynced copy where links fail."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links: create exclusively, then copy
        with open(dst, 'xb') as out, open(src, 'rb') as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())


def publish_file(src: str, dst: str) -> None:
    """Atomically make ``dst`` a copy of the finished file ``src`` (a hard link when possible), replacing it.

    Stores one checkpoint under several names (``ckpt_epoch_N.pth``, ``best.pth``, ``last.pth``) while
    writing it once; later replacing ``src`` does not change ``dst``.
    """
    tmp = temp_path(dst)
    try:
        _link_or_copy(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def create_exclusively(src: str, dst: str) -> None:
    """Make ``dst`` a copy of the finished file ``src`` only if ``dst`` does not exist yet.

    Raises ``FileExistsError`` otherwise: unlike :func:`publish_file`, nothing is ever replaced.
    """
    _link_or_copy(src, dst)
    fsync_dir(os.path.dirname(os.path.abspath(dst)))


def format_size(nbytes: float) -> str:
    """``nbytes`` for a message: ``512 bytes``, ``64.0 KB``, ``5.0 MB``, ``1.2 GB`` (binary units)."""
    if nbytes < 1024:
        return f'{int(nbytes)} bytes'
    for unit in ('KB', 'MB', 'GB'):
        nbytes /= 1024
        if nbytes < 1024 or unit == 'GB':
            return f'{nbytes:.1f} {unit}'
    return f'{nbytes:.1f} GB'  # not reached


# torch.save's zip writer reports a short write (the file system took fewer bytes than written: a full disk or
# quota) as a RuntimeError "[enforce fail at inline_container.cc:NNN] . unexpected pos A vs B"; the errno is lost.
_SHORT_WRITE = 'unexpected pos'


def no_space_message(folder: str, needed: int, error: BaseException) -> Optional[str]:
    """One line saying why writing about ``needed`` bytes into ``folder`` failed for want of space, or None when
    ``error`` is not such a failure (ENOSPC, EDQUOT or torch's short write).

    Tells apart the cases a user fixes differently: no free bytes, no free inodes (ENOSPC with bytes to spare:
    a file cannot even be created, so the size needed says nothing) and a quota."""
    if isinstance(error, OSError):
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            return None
        code = error.errno
    elif isinstance(error, RuntimeError) and _SHORT_WRITE in str(error):
        code = None  # the file system's reason is not known: its state below tells
    else:
        return None
    try:
        stats = os.statvfs(folder)
        free, free_inodes = stats.f_bavail * stats.f_frsize, stats.f_favail
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        free, free_inodes = None, None
    if code == errno.EDQUOT:
        reason = f'disk quota exceeded (about {format_size(needed)} needed)'
    elif free_inodes == 0 and (free is None or free >= needed):
        reason = (f'no free inodes left on the device: no new file can be created there although '
                  f'{format_size(free) if free is not None else "space"} is free')
    elif code is None and free is not None and free >= needed:
        reason = (f'the write stopped short ({error}; {format_size(free)} free, about {format_size(needed)} '
                  'needed: a quota or a network file system may refuse more)')
    else:
        reason = f'no space left on the device (about {format_size(needed)} needed' + \
            (f', {format_size(free)} free)' if free is not None else ')')
    return f'{folder}: {reason}'
