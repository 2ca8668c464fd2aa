"""Video-FocalNet models: ``VideoFocalNet``, ``build_model(config)`` and the timm names
``video_focalnet_{tiny,small,base}`` (registered on import); ``DESIGNS``: the design space of the paper
(``MODEL.FOCAL.DESIGN``), ``ARCHITECTURES``: the published sizes."""
from .architectures import ARCHITECTURES, DESIGNS
from .build import build_model, MODEL_TYPES
from .video_focalnet import VideoFocalNet, VideoFocalNetBlock, VideoFocalNetStage
from .focal_modulation import SpatioTemporalFocalModulation
from . import registry  # noqa: F401  (registers the timm model names)

__all__ = ['VideoFocalNet', 'VideoFocalNetBlock', 'VideoFocalNetStage', 'SpatioTemporalFocalModulation',
           'build_model', 'MODEL_TYPES', 'ARCHITECTURES', 'DESIGNS']
