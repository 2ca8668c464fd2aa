"""Checkpoints: what they hold, how they are read safely, put into a model, written and how RNG state is kept.

* ``schema.py``: the entries of a training checkpoint (the one definition; docs/checkpoints.md's table is made from it);
* ``loading.py``: reading files without executing pickled code (also the original's and timm's files);
* ``weights.py``: strict weight loading with a report of what does not fit, ImageNet / video initialisation;
* ``saving.py``: atomic writes of plain data, one write per save published under several names;
* ``rng.py``: the RNG states of a process as plain data.

Where a run resumes from (auto-resume) and how training state is restored is ``engine/resume.py``.
"""
from engine.checkpoint.loading import CheckpointError, UnsafeCheckpointError, load_checkpoint_file
from engine.checkpoint.rng import capture_rng_state, restore_rng_state
from engine.checkpoint.saving import checkpoint_names, save_checkpoint, write_checkpoint
from engine.checkpoint.schema import make_checkpoint
from engine.checkpoint.weights import extract_state_dict, load_model_weights, load_pretrained, unwrap_model
from models.pretrained import PretrainedMismatchError

__all__ = [
    'CheckpointError', 'UnsafeCheckpointError', 'PretrainedMismatchError', 'load_checkpoint_file',
    'extract_state_dict', 'unwrap_model', 'load_model_weights', 'load_pretrained', 'save_checkpoint',
    'write_checkpoint', 'checkpoint_names', 'make_checkpoint', 'capture_rng_state', 'restore_rng_state',
]
