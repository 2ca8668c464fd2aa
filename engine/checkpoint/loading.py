"""Safe loading of checkpoint files: the reader lives in ``utils/checkpoint_file.py`` (``models/`` reads
checkpoint files too and must not import ``engine/``); this module keeps the names where ``engine`` imports them, and adds :func:`load_checkpoint_mapped`."""
from typing import Any, Dict

from utils.checkpoint_file import CheckpointError, PathLike, UnsafeCheckpointError, _is_state_dict, \
    load_checkpoint_file, verify_zip_crc

__all__ = ['CheckpointError', 'PathLike', 'UnsafeCheckpointError', 'load_checkpoint_file', 'load_checkpoint_mapped',
           'verify_zip_crc', '_is_state_dict']


def load_checkpoint_mapped(path: PathLike) -> Dict[str, Any]:
    """``load_checkpoint_file`` with the tensors memory-mapped, for a look at a checkpoint's entries without
    reading its tensor data; a file of the legacy (non-zip) format, which cannot be mapped, is read whole."""
    try:
        return load_checkpoint_file(path, mmap=True)
    except CheckpointError as e:
        if 'mmap' not in str(e):
            raise
        return load_checkpoint_file(path)
