"""``build_model(config)``: a ``VideoFocalNet`` from a yacs config.

Unlike the original, which took depth and width from hard-wired factory functions and ignored the yaml's
``MODEL.FOCAL.EMBED_DIM/DEPTHS``, ``MODEL.DROP_RATE``, ``TRAIN.USE_CHECKPOINT`` and several other keys, every
key below is read: ``MODEL.TYPE`` only names the family (a size in it that disagrees with
``MODEL.FOCAL.EMBED_DIM/DEPTHS`` is logged as a warning).
"""
from __future__ import annotations

import logging
from typing import Any

from utils.errors import ConfigError

from .architectures import ARCHITECTURES, DESIGNS
from .video_focalnet import VideoFocalNet

_logger = logging.getLogger(__name__)

# the family name alone (custom width/depth, e.g. the toy) or with a published size
MODEL_TYPES = ('videofocalnet', 'video_focalnet') + tuple(
    f'{prefix}_{size}' for prefix in ('videofocalnet', 'video_focalnet') for size in ARCHITECTURES)
# width and depth of the published sizes, to flag a MODEL.TYPE that names another size than the keys build
PUBLISHED_SIZES = {size: (arch['embed_dim'], list(arch['depths'])) for size, arch in ARCHITECTURES.items()}


def _config_error(msg: str) -> Exception:
    return ConfigError(msg)


def build_model(config: Any) -> VideoFocalNet:
    """Build the model described by ``config`` (``MODEL.*``, ``DATA.NUM_FRAMES``, ``DATA.IMG_SIZE``,
    ``TRAIN.USE_CHECKPOINT``, ``TRAIN.SELECTIVE_CHECKPOINT``)."""
    model_type = config.MODEL.TYPE
    if model_type not in MODEL_TYPES:
        raise _config_error(f"MODEL.TYPE: expected one of {list(MODEL_TYPES)}, got {model_type!r}")
    focal = config.MODEL.FOCAL
    design = focal.get('DESIGN', 'parallel')
    if design not in DESIGNS:
        raise _config_error(f"MODEL.FOCAL.DESIGN: expected one of {list(DESIGNS)}, got {design!r}")
    depths = list(focal.DEPTHS)
    size = model_type.rsplit('_', 1)[-1]
    if size in PUBLISHED_SIZES and (focal.EMBED_DIM, depths) != PUBLISHED_SIZES[size]:
        _logger.warning("MODEL.TYPE %s names Video-FocalNet-%s (EMBED_DIM %d, DEPTHS %s), but the model is built "
                        "from MODEL.FOCAL: EMBED_DIM %d, DEPTHS %s", model_type, size[0].upper(),
                        *PUBLISHED_SIZES[size], focal.EMBED_DIM, depths)
    for key in ('FOCAL_LEVELS', 'FOCAL_WINDOWS', 'FOCAL_FACTORS'):
        value = focal[key]
        if not isinstance(value, int) and len(value) != len(depths):
            raise _config_error(f"MODEL.FOCAL.{key}: expected one value per stage ({len(depths)} stages in "
                                f"MODEL.FOCAL.DEPTHS {depths}), got {list(value)}")
    if config.DATA.NUM_FRAMES % config.MODEL.TUBELET_SIZE:
        raise _config_error(f"DATA.NUM_FRAMES ({config.DATA.NUM_FRAMES}) must be a multiple of "
                            f"MODEL.TUBELET_SIZE ({config.MODEL.TUBELET_SIZE})")
    model = VideoFocalNet(
        img_size=config.DATA.IMG_SIZE,
        patch_size=focal.PATCH_SIZE,
        in_chans=focal.IN_CHANS,
        num_classes=config.MODEL.NUM_CLASSES,
        embed_dim=focal.EMBED_DIM,
        depths=depths,
        mlp_ratio=focal.MLP_RATIO,
        drop_rate=config.MODEL.DROP_RATE,
        head_drop_rate=config.MODEL.HEAD_DROP_RATE,
        drop_path_rate=config.MODEL.DROP_PATH_RATE,
        drop_path_mode=config.MODEL.DROP_PATH_MODE,
        patch_norm=focal.PATCH_NORM,
        use_checkpoint=config.TRAIN.USE_CHECKPOINT,
        selective_checkpoint=config.TRAIN.SELECTIVE_CHECKPOINT,
        focal_levels=focal.FOCAL_LEVELS,
        focal_windows=focal.FOCAL_WINDOWS,
        focal_factors=focal.FOCAL_FACTORS,
        use_conv_embed=focal.USE_CONV_EMBED,
        use_layerscale=focal.USE_LAYERSCALE,
        layerscale_value=focal.LAYERSCALE_VALUE,
        use_postln=focal.USE_POSTLN,
        use_postln_in_modulation=focal.USE_POSTLN_IN_MODULATION,
        normalize_modulator=focal.NORMALIZE_MODULATOR,
        num_frames=config.DATA.NUM_FRAMES,
        tubelet_size=config.MODEL.TUBELET_SIZE,
        design=design,
    )
    _logger.info("built %s (design %s): embed_dim %d, depths %s, %d frames, tubelet %d, %.2fM parameters",
                 model_type, design, focal.EMBED_DIM, depths, config.DATA.NUM_FRAMES, config.MODEL.TUBELET_SIZE,
                 sum(p.numel() for p in model.parameters()) / 1e6)
    return model
