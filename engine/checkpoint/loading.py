"""Safe loading of checkpoint files: the reader lives in ``utils/checkpoint_file.py`` (``models/`` reads
checkpoint files too and must not import ``engine/``); this module keeps the names where ``engine`` imports them."""
from utils.checkpoint_file import CheckpointError, PathLike, UnsafeCheckpointError, _is_state_dict, \
    load_checkpoint_file, verify_zip_crc

__all__ = ['CheckpointError', 'PathLike', 'UnsafeCheckpointError', 'load_checkpoint_file', 'verify_zip_crc',
           '_is_state_dict']
