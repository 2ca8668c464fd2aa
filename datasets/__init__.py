"""The video data pipeline: annotations -> decoding -> frame sampling -> augmentation -> batches.

The package name is also Hugging Face's ``datasets``; the repository root comes first on ``sys.path``
for ``python -m``, ``main.py`` and the tests (see ``conftest.py``), so this package is the one imported.

Modules: ``annotations`` (annotation files, label lists), ``decoders`` (decord/PyAV behind
``open_video``), ``sampling`` (segment/dense frame indices), ``transforms`` (uint8 clip augmentation,
test crops, ``normalize_clip``), ``video_dataset`` (one decode per item, unreadable-video policy),
``loader`` (DataLoaders from the config), ``samplers``, ``mixup``, ``toy``; ``python -m datasets.check``
scans an annotation file.
"""
from .annotations import AnnotationError, read_annotations, read_label_list
from .decoders import VideoDecodeError, available_backends, open_video, write_video
from .loader import build_dataset, build_eval_loader, build_train_loader
from .mixup import Mixup, build_mixup
from .samplers import DistributedEvalSampler, DistributedTrainSampler
from .sampling import FrameSampler
from .transforms import apply_random_erasing, normalize_clip
from .video_dataset import UnreadableVideosError, VideoDataset



def ensure_toy_dataset(*args, **kwargs):
    """``datasets.toy.ensure_toy_dataset``, imported on first use.

    Importing ``datasets.toy`` here eagerly would make ``python -m datasets.toy`` run a module that is
    already in ``sys.modules`` (runpy warns about that); the wrapper keeps the package import lazy.
    """
    from .toy import ensure_toy_dataset as ensure
    return ensure(*args, **kwargs)


__all__ = [
    'AnnotationError', 'read_annotations', 'read_label_list',
    'VideoDecodeError', 'available_backends', 'open_video', 'write_video',
    'build_dataset', 'build_eval_loader', 'build_train_loader',
    'Mixup', 'build_mixup',
    'DistributedEvalSampler', 'DistributedTrainSampler',
    'FrameSampler',
    'ensure_toy_dataset',
    'apply_random_erasing', 'normalize_clip',
    'UnreadableVideosError', 'VideoDataset',
]
