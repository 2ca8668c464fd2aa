"""torch.hub entry points: Video-FocalNet-T/S/B, optionally with the weights of a local checkpoint.

    import torch
    model = torch.hub.load('/path/to/this/repo', 'video_focalnet_base', source='local',
                           checkpoint='video-focalnet_base_k400.pth', num_classes=400)
    model.eval()
    logits = model(clips)          # clips: float (B, 8, 3, 224, 224), normalised as in datasets.normalize_clip

Nothing is downloaded: the original release files are on Google Drive, which torch.hub cannot fetch, so
``checkpoint`` names a file you have (the original's checkpoints, this project's, or a file made by
``tools/publish.py``). Other keyword arguments go to the model constructor (e.g. ``num_frames``,
``drop_path_rate``). Without ``checkpoint`` the model is randomly initialised.
"""
from __future__ import annotations

from typing import Optional

dependencies = ['torch', 'timm', 'yacs']


def _create(name: str, checkpoint: Optional[str], num_classes: int, **kwargs):
    import timm

    import models  # noqa: F401  (registers the video_focalnet_* names with timm)
    from engine.checkpoint import load_model_weights

    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if checkpoint:
        load_model_weights(model, checkpoint, strict=True)
    return model


def video_focalnet_tiny(checkpoint: Optional[str] = None, num_classes: int = 400, **kwargs):
    """Video-FocalNet-T (embed dim 96, depths 2-2-6-2, 8 frames). ``checkpoint``: local weights file."""
    return _create('video_focalnet_tiny', checkpoint, num_classes, **kwargs)


def video_focalnet_small(checkpoint: Optional[str] = None, num_classes: int = 400, **kwargs):
    """Video-FocalNet-S (embed dim 96, depths 2-2-18-2, 8 frames). ``checkpoint``: local weights file."""
    return _create('video_focalnet_small', checkpoint, num_classes, **kwargs)


def video_focalnet_base(checkpoint: Optional[str] = None, num_classes: int = 400, **kwargs):
    """Video-FocalNet-B (embed dim 128, depths 2-2-18-2, 8 frames). ``checkpoint``: local weights file."""
    return _create('video_focalnet_base', checkpoint, num_classes, **kwargs)
