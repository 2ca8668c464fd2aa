"""timm registration: ``timm.create_model('video_focalnet_{tiny,small,base}[.tag]', **kwargs)``.

The published architectures (``models.architectures.ARCHITECTURES``) are the defaults; any constructor
argument of ``VideoFocalNet`` passed as a keyword overrides them (``embed_dim``, ``depths``, ``num_frames``,
``design``, ...). No weights can be downloaded (the original's URLs were empty); load a local checkpoint with
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``. The file is read with
the project's safe loader (``utils/checkpoint_file.py``), so the original's files (which pickle a yacs config)
load without executing pickled code. If ``num_classes`` differs from the checkpoint's head, the head is
left freshly initialised and everything else is loaded strictly. Stage features:
``model.forward_intermediates`` (timm's ``features_only`` wrappers expect 2-D feature formats, NCHW/NHWC,
and are not wired).
"""
from __future__ import annotations

import logging
from typing import Any, Dict

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import architectures
from .video_focalnet import VideoFocalNet
from .weights import extract_state_dict, load_checkpoint_file, load_model_weights

_logger = logging.getLogger(__name__)

# timm name -> constructor arguments, from the one table in models.architectures
ARCHITECTURES: Dict[str, Dict[str, Any]] = {
    f'video_focalnet_{size}': dict(arch) for size, arch in architectures.ARCHITECTURES.items()}


def _cfg(num_classes: int, **kwargs: Any) -> Dict[str, Any]:
    return dict(url='', num_classes=num_classes, input_size=(3, 224, 224), pool_size=None, crop_pct=1.0,
                interpolation='bilinear', mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                first_conv='patch_embed.proj', classifier='head', license='mit',
                paper_ids='arXiv:2307.06947', **kwargs)


default_cfgs = generate_default_cfgs({
    'video_focalnet_tiny.k400': _cfg(400),
    'video_focalnet_small.k400': _cfg(400),
    'video_focalnet_base.k400': _cfg(400),
    'video_focalnet_base.k600': _cfg(600),
    'video_focalnet_base.ssv2': _cfg(174),
    'video_focalnet_base.diving48': _cfg(48),
    'video_focalnet_base.activitynet': _cfg(200),
})


def load_local_weights(model: VideoFocalNet, path: str) -> None:
    """Load ``path`` (original checkpoint, our checkpoint or bare state dict) into ``model``, safely.

    A head whose shape differs from the checkpoint's (another ``num_classes``) is kept as initialised.
    """
    state_dict = extract_state_dict(load_checkpoint_file(path), source=path)
    own = model.state_dict()
    for key in ('head.weight', 'head.bias'):
        if key in state_dict and key in own and state_dict[key].shape != own[key].shape:
            _logger.info("%s: %s has shape %s, the model's is %s: keeping the new head", path, key,
                         tuple(state_dict[key].shape), tuple(own[key].shape))
            state_dict[key] = own[key]
    load_model_weights(model, state_dict, strict=True)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> VideoFocalNet:
    model_args = dict(ARCHITECTURES[variant])
    model_args.update(kwargs)
    model = build_model_with_cfg(VideoFocalNet, variant, pretrained=False, **model_args)
    if pretrained:
        path = model.pretrained_cfg.get('file')
        if not path:
            raise RuntimeError(f"{variant}: no downloadable weights exist; pass a local checkpoint with "
                               f"pretrained_cfg_overlay=dict(file=PATH)")
        load_local_weights(model, path)
    return model


def _entry_point(size: str):
    variant = f'video_focalnet_{size}'

    def create(pretrained: bool = False, **kwargs: Any) -> VideoFocalNet:
        return _create(variant, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = variant
    create.__doc__ = f"Video-FocalNet-{size[0].upper()}: {architectures.describe(size)}, focal levels 2 (kernels 3, 5)."
    return create


# timm's register_model reads the function's name and module: one entry point per size of the table
for _size in architectures.ARCHITECTURES:
    globals()[f'video_focalnet_{_size}'] = register_model(_entry_point(_size))
