"""timm registration: ``timm.create_model('video_focalnet_{tiny,small,base}[.tag]', **kwargs)``.

The published architectures (``models.architectures.ARCHITECTURES``) are the defaults; any constructor
argument of ``VideoFocalNet`` passed as a keyword overrides them (``embed_dim``, ``depths``, ``num_frames``,
``design``, ...). No weights can be downloaded (the original's URLs were empty); load a local checkpoint with
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))``. The file is read with
the project's safe loader (``utils/checkpoint_file.py``), so the original's files (which pickle a yacs config)
load without executing pickled code. If ``num_classes`` differs from the checkpoint's head, the head is
left freshly initialised and everything else is loaded strictly.

``features_only=True`` returns ``models.features.VideoFeatures``: one 5-D map per stage (``out_indices``, default
every stage; ``output_fmt`` ``'NCTHW'`` or ``'NTHWC'``), from ``forward_intermediates``. timm's image feature
wrappers (``feature_cls``) cannot take 5-D features and are refused. ``pretrained_cfg`` carries ``num_frames``,
the clip length the model is built for, next to timm's per-frame ``input_size``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Union

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from . import architectures
from .features import VideoFeatures
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


# feature wrappers the user may name: the video one (also under timm's name of the wrapper it mirrors)
_FEATURE_CLASSES = (None, 'getter', VideoFeatures)


def _feature_args(variant: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Take timm's ``features_only`` options out of ``kwargs``: the arguments of ``VideoFeatures``."""
    args = dict(kwargs.pop('feature_cfg', None) or {})
    for key in ('out_indices', 'output_fmt', 'feature_cls'):
        if key in kwargs:
            args[key] = kwargs.pop(key)
    for key in ('flatten_sequential', 'no_rewrite'):  # options of timm's hook/dict wrappers, meaningless here
        args.pop(key, None)
    feature_cls = args.pop('feature_cls', None)
    if isinstance(feature_cls, str):
        feature_cls = feature_cls.lower()  # as timm reads the names
    if not any(feature_cls is c or (isinstance(c, str) and feature_cls == c) for c in _FEATURE_CLASSES):
        raise ValueError(f"{variant}: feature_cls {feature_cls!r} is an image (2-D) feature wrapper and cannot take "
                         f"Video-FocalNet's 5-D stage features; leave feature_cls out (features_only=True gives one "
                         f"map per stage) or call model.forward_intermediates")
    return args


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> Union[VideoFocalNet, VideoFeatures]:
    features_only = kwargs.pop('features_only', False)
    feature_args = _feature_args(variant, kwargs) if features_only else {}
    model_args = dict(ARCHITECTURES[variant])
    model_args.update(kwargs)
    model = build_model_with_cfg(VideoFocalNet, variant, pretrained=False, **model_args)
    # the clip length next to timm's per-frame input_size: PretrainedCfg has no field for it, the dict takes it
    model.pretrained_cfg['num_frames'] = model.num_frames
    if pretrained:
        path = model.pretrained_cfg.get('file')
        if not path:
            raise RuntimeError(f"{variant}: no downloadable weights exist; pass a local checkpoint with "
                               f"pretrained_cfg_overlay=dict(file=PATH)")
        load_local_weights(model, path)
    if not features_only:
        return model
    # weights are loaded into the whole model first, so a classifier checkpoint loads strictly
    features = VideoFeatures(model, **feature_args)
    features.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items()
                               if k not in ('num_classes', 'classifier', 'global_pool')}
    features.default_cfg = features.pretrained_cfg
    return features


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
