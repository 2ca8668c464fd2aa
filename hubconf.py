"""torch.hub entry points: Video-FocalNet-T/S/B, optionally with the weights of a local checkpoint.

    import torch
    model = torch.hub.load('/path/to/this/repo', 'video_focalnet_base', source='local',
                           checkpoint='video-focalnet_base_k400.pth')
    model.eval()
    logits = model(clips)          # clips: float (B, 8, 3, 224, 224), normalised as in datasets.normalize_clip
    names = model.class_names      # names by class id when the checkpoint carries them, else None

Nothing is downloaded: the original release files are on Google Drive, which torch.hub cannot fetch, so
``checkpoint`` names a file you have (the original's checkpoints, this project's, or a file made by
``tools/publish.py``). With a checkpoint, ``num_classes`` and the architecture come from the file: the
tensor shapes give the width, the blocks per stage, the MLP ratio, the focal levels, the tubelet and the
number of classes; the stored config (if any) gives the rest (frames, input size, design, normalisation
switches). Keyword arguments override what the file says (e.g. ``num_frames=16``, ``drop_path_rate``,
``design``); one that contradicts the weights is an error naming the argument. Without ``checkpoint`` the
model is randomly initialised with the entry's published size and ``num_classes`` (default 400).

A checkpoint that cannot be used raises ``engine.checkpoint.CheckpointError`` with one line naming the file and
the problem (damaged, weights that do not fit, NaN / inf weights); a pickle that asks for anything but tensors and
containers raises its subclass ``UnsafeCheckpointError`` before anything in it runs.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, Mapping, Optional

from models.architectures import ARCHITECTURES, describe as _describe
from models.sizes import shape_architecture as _shape_architecture

dependencies = ['torch', 'timm', 'yacs']

_logger = logging.getLogger(__name__)


def _config_architecture(text: Optional[str], source: str) -> Dict[str, Any]:
    """Constructor arguments from a stored config: every ``MODEL.FOCAL`` key (lower case is the argument's
    name), the clip length, input size, tubelet and classes; {} when there is no readable config."""
    if not text:
        return {}
    from engine.config import config_from_yaml_text
    from models import VideoFocalNet
    try:
        config = config_from_yaml_text(text)
    except Exception as e:  # a config of another version: the shapes still give the architecture
        _logger.warning("%s: stored config not readable (%s); the architecture comes from the tensor shapes",
                        source, e)
        return {}
    accepted = inspect.signature(VideoFocalNet.__init__).parameters
    arch = {k.lower(): v for k, v in config.MODEL.FOCAL.items() if k.lower() in accepted}
    arch.update(num_classes=config.MODEL.NUM_CLASSES, num_frames=config.DATA.NUM_FRAMES,
                img_size=config.DATA.IMG_SIZE, tubelet_size=config.MODEL.TUBELET_SIZE)
    return arch


def _checkpoint_architecture(checkpoint: Mapping[str, Any], state: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """``VideoFocalNet`` arguments for a checkpoint: its stored config, overridden by what the tensor shapes
    say (the original stored configs whose ``EMBED_DIM``/``DEPTHS`` its code ignored, so the shapes win)."""
    from tools._common import config_text
    return {**_config_architecture(config_text(checkpoint.get('config')), source), **_shape_architecture(state)}


def _arguments(name: str, checkpoint: str, given: Mapping[str, Any]) -> str:
    """``video_focalnet_tiny(checkpoint='x.pth', num_classes=7)``: the call as the user wrote it."""
    return f"{name}(" + ', '.join(f'{k}={v!r}' for k, v in {'checkpoint': checkpoint, **given}.items()) + ')'


def _new_head_call(size: str, checkpoint: str, num_classes: int, arch: Mapping[str, Any]) -> str:
    """The timm call that builds the checkpoint's model with a new ``num_classes`` head and loads the rest: the
    entry's published size is timm's default, so every argument in which the checkpoint differs from it is
    spelled out (a toy-sized or 16-frame file would not fit the default)."""
    from models import VideoFocalNet
    defaults = {name: p.default for name, p in inspect.signature(VideoFocalNet.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    defaults.update(ARCHITECTURES[size])

    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    differing = {k: plain(v) for k, v in arch.items()
                 if k in defaults and k != 'num_classes' and plain(v) != plain(defaults[k])}
    arguments = ''.join(f', {k}={v!r}' for k, v in differing.items())
    return (f"import timm, models; timm.create_model('video_focalnet_{size}', pretrained=True, "
            f"num_classes={num_classes}{arguments}, pretrained_cfg_overlay=dict(file={checkpoint!r}))")


def _create(size: str, checkpoint: Optional[str], num_classes: Optional[int], **kwargs):
    import timm

    import models  # noqa: F401  (registers the video_focalnet_* names with timm)
    from engine.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file, load_model_weights

    name = f'video_focalnet_{size}'
    if not checkpoint:
        model = timm.create_model(name, pretrained=False, num_classes=400 if num_classes is None else num_classes,
                                  **kwargs)
        model.class_names = None
        return model
    given = dict(kwargs, **({} if num_classes is None else {'num_classes': num_classes}))
    call = _arguments(name, checkpoint, given)
    loaded = load_checkpoint_file(checkpoint)
    state = extract_state_dict(loaded, 'model', checkpoint)
    stored = _checkpoint_architecture(loaded, state, checkpoint)
    head = stored.get('num_classes')
    if num_classes is not None and head is not None and num_classes != head:
        raise CheckpointError(
            f"{call}: the checkpoint's head has {head} classes; leave num_classes out (it is read from the "
            f"checkpoint), or for a new {num_classes}-class head to fine-tune use "
            f"{_new_head_call(size, checkpoint, num_classes, {**stored, **kwargs})}")
    published = {(arch['embed_dim'], tuple(arch['depths'])): s for s, arch in ARCHITECTURES.items()}
    holds = published.get((stored.get('embed_dim'), tuple(stored.get('depths', ()))))
    if holds not in (None, size) and not {'embed_dim', 'depths'} & set(kwargs):
        raise CheckpointError(f"{call}: the checkpoint holds Video-FocalNet-{holds[0].upper()} ({_describe(holds)}); "
                              f"load it with the 'video_focalnet_{holds}' entry")
    model = timm.create_model(name, pretrained=False, **{**stored, **given})
    try:
        load_model_weights(model, loaded, strict=True)
    except CheckpointError as e:
        # the loader speaks of '<checkpoint dict>' (it got the loaded dict, not the path); name the call instead
        detail = str(e).split(': weights do not match the model: ', 1)[-1]
        raise CheckpointError(f"{call}: the weights do not fit the model these arguments build: {detail} "
                              f"(arguments left out are read from the checkpoint)") from None
    names = loaded.get('class_names')
    model.class_names = list(names) if isinstance(names, (list, tuple)) and len(names) == model.num_classes else None
    return model


def _entry_point(size: str):
    def create(checkpoint: Optional[str] = None, num_classes: Optional[int] = None, **kwargs):
        return _create(size, checkpoint, num_classes, **kwargs)

    create.__name__ = create.__qualname__ = f'video_focalnet_{size}'
    create.__doc__ = (f"Video-FocalNet-{size[0].upper()} ({_describe(size)}, 8 frames). ``checkpoint``: local "
                      f"weights file (num_classes and the architecture are read from it); ``num_classes``: "
                      f"default 400 without a checkpoint; ``design``: another design of the paper's study "
                      f"(MODEL.FOCAL.DESIGN).")
    return create


# one entry point per size of the architecture table (models/architectures.py)
for _size in ARCHITECTURES:
    globals()[f'video_focalnet_{_size}'] = _entry_point(_size)
# torch.hub.list shows every public callable of this module as an entry: only the models may stay public
del Any, Dict, Mapping, Optional, _size
