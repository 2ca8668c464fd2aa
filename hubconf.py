"""torch.hub entry points: Video-FocalNet-T/S/B, optionally with the weights of a local checkpoint.

    import torch
    model = torch.hub.load('/path/to/this/repo', 'video_focalnet_base', source='local',
                           checkpoint='video-focalnet_base_k400.pth', num_classes=400)
    model.eval()
    logits = model(clips)          # clips: float (B, 8, 3, 224, 224), normalised as in datasets.normalize_clip

Nothing is downloaded: the original release files are on Google Drive, which torch.hub cannot fetch, so
``checkpoint`` names a file you have (the original's checkpoints, this project's, or a file made by
``tools/publish.py``). Other keyword arguments go to the model constructor (e.g. ``num_frames``,
``drop_path_rate``, ``design``). Without ``checkpoint`` the model is randomly initialised.

A checkpoint that cannot be used raises ``engine.checkpoint.CheckpointError`` with one line naming the file and
the problem (damaged, weights that do not fit, NaN / inf weights); a pickle that asks for anything but tensors and
containers raises its subclass ``UnsafeCheckpointError`` before anything in it runs.
"""
from __future__ import annotations

from typing import Optional

from models.architectures import ARCHITECTURES, describe

dependencies = ['torch', 'timm', 'yacs']


def _create(name: str, checkpoint: Optional[str], num_classes: int, **kwargs):
    import timm

    import models  # noqa: F401  (registers the video_focalnet_* names with timm)
    from engine.checkpoint import load_model_weights

    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if checkpoint:
        load_model_weights(model, checkpoint, strict=True)
    return model


def _entry_point(size: str):
    def create(checkpoint: Optional[str] = None, num_classes: int = 400, **kwargs):
        return _create(f'video_focalnet_{size}', checkpoint, num_classes, **kwargs)

    create.__name__ = create.__qualname__ = f'video_focalnet_{size}'
    create.__doc__ = (f"Video-FocalNet-{size[0].upper()} ({describe(size)}, 8 frames). ``checkpoint``: local "
                      f"weights file; ``design``: another design of the paper's study (MODEL.FOCAL.DESIGN).")
    return create


# one entry point per size of the architecture table (models/architectures.py)
for _size in ARCHITECTURES:
    globals()[f'video_focalnet_{_size}'] = _entry_point(_size)
