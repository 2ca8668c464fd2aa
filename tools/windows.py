"""Sliding windows over whole videos, each one evaluation clip: shared by ``tools.extract_features`` and
``tools.predict --timeline``.

A window covers ``window_frames`` consecutive frames of the video (default ``NUM_FRAMES x FRAME_INTERVAL``:
the span of one dense clip at the config's frame interval). Window ``k`` is centred at ``(k + 0.5) x stride``
seconds, moved inside the video where it would stick out, so a video of ``D`` seconds gives ``ceil(D /
stride)`` windows (a 10 s video at stride 1 s: ten) and row ``k`` describes the stretch around
``[k x stride, (k + 1) x stride)`` (the usual snippet grid of temporal localization features). A video shorter
than a window gives one window over all of it (frames wrap around, as the frame samplers do).

Inside a window the clip's frames are chosen by the config's test sampler (``datasets.sampling``: segment
centres or a centred dense clip), then transformed as one evaluation view (``datasets.transforms``):
``crop='center'`` is the evaluation's single centre crop, ``crop='full'`` resizes the whole frame to the
input size (nothing cut off, the aspect ratio is not kept). Frames come from ``datasets.decoders``.

``WindowBatches`` is a map-style dataset of batches of windows of one video (one item = up to ``batch``
windows of one video, decoded together), so a ``DataLoader`` with workers decodes ahead of the model; an
unreadable video yields one item with its reason instead of frames.

New (the original had no long-video tools).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

CROPS = ('center', 'full')


@dataclass(frozen=True)
class WindowSettings:
    """How windows are cut and sampled (everything the features of a window depend on, the model aside)."""
    stride: float               # seconds between window centres
    window_frames: int          # video frames a window covers
    num_frames: int             # frames sampled from it (DATA.NUM_FRAMES)
    interval: int               # AUG.FRAME_INTERVAL
    sampling: str               # DATA.SAMPLING
    input_size: int             # DATA.INPUT_SIZE
    crop: str                   # 'center' | 'full'
    decoder: str                # DATA.DECODER

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def settings_from_config(config, stride: float, window_frames: Optional[int] = None,
                         crop: str = 'center') -> WindowSettings:
    """The window settings of a config; ``window_frames`` None: ``NUM_FRAMES x FRAME_INTERVAL``.

    Raises:
        ValueError: a stride or window that is not positive, or an unknown crop.
    """
    if not stride > 0:
        raise ValueError(f"--stride {stride}: expected a positive number of seconds")
    frames = window_frames if window_frames is not None else config.DATA.NUM_FRAMES * config.AUG.FRAME_INTERVAL
    if frames < 1:
        raise ValueError(f"--window-frames {frames}: expected at least 1")
    if crop not in CROPS:
        raise ValueError(f"--crop {crop!r}: expected one of {list(CROPS)}")
    return WindowSettings(float(stride), int(frames), config.DATA.NUM_FRAMES, config.AUG.FRAME_INTERVAL,
                          config.DATA.SAMPLING, config.DATA.INPUT_SIZE, crop, config.DATA.DECODER)


def window_starts(num_frames: int, fps: float, window_frames: int, stride: float) -> np.ndarray:
    """First frame of each window (int64): window ``k`` centred at ``(k + 0.5) x stride`` seconds, inside the video."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"unknown frame rate ({fps}): cannot place windows in seconds")
    duration = num_frames / fps
    count = max(1, math.ceil(duration / stride - 1e-9))
    centres = (np.arange(count) + 0.5) * stride * fps
    starts = np.round(centres - window_frames / 2.0).astype(np.int64)
    return np.clip(starts, 0, max(0, num_frames - window_frames))


def window_times(starts: np.ndarray, num_frames: int, fps: float, window_frames: int) -> np.ndarray:
    """``(windows, 2)`` start and end of each window in seconds (the end clipped to the video's end)."""
    ends = np.minimum(starts + window_frames, num_frames)
    return np.stack([starts / fps, ends / fps], axis=1).astype(np.float64)


def clip_indices(start: int, num_frames: int, settings: WindowSettings) -> np.ndarray:
    """The ``NUM_FRAMES`` frame indices of the window starting at ``start``: the test sampler over the window."""
    from datasets.sampling import FrameSampler

    sampler = FrameSampler(settings.num_frames, settings.interval, mode=settings.sampling)
    local = sampler.test(min(settings.window_frames, num_frames), 1)[0]
    return (start + local) % num_frames


def transform_clip(frames: np.ndarray, settings: WindowSettings) -> torch.Tensor:
    """Decoded frames ``(T, H, W, 3)`` uint8 -> one view ``(T, 3, S, S)`` uint8 (see ``crop``)."""
    from torchvision.transforms import functional as F

    from datasets.transforms import BILINEAR, EvalTransform, frames_to_tensor

    clip = frames_to_tensor(frames)
    if settings.crop == 'center':
        return EvalTransform(settings.input_size, 1)(clip)[0].contiguous()
    size = [settings.input_size, settings.input_size]
    return F.resize(clip, size, interpolation=BILINEAR, antialias=False).contiguous()


@dataclass
class VideoWindows:
    """The windows of one video: where they lie (frames and seconds) and how many frames the video has."""
    path: str
    num_frames: int
    fps: float
    starts: np.ndarray
    times: np.ndarray

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def output_stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def check_stems(paths: Sequence[str]) -> None:
    """Two videos with the same file name would write the same ``<stem>.npy``: refuse, naming both."""
    seen: Dict[str, str] = {}
    for path in paths:
        stem = output_stem(path)
        if stem in seen and os.path.abspath(seen[stem]) != os.path.abspath(path):
            raise ValueError(f"{seen[stem]} and {path} would both write {stem}.* (outputs are named by the video's "
                             f"file name); rename one, or run them into different output folders")
        seen[stem] = path


def plan_windows(path: str, settings: WindowSettings) -> VideoWindows:
    """Open ``path`` (header only) and place its windows. Raises ``VideoDecodeError`` for an unreadable file."""
    from datasets.decoders import VideoDecodeError, open_video

    with open_video(path, settings.decoder) as reader:
        num_frames, fps = reader.num_frames, reader.fps
    if not fps > 0:
        raise VideoDecodeError(path, "the file states no frame rate: windows cannot be placed in seconds")
    starts = window_starts(num_frames, fps, settings.window_frames, settings.stride)
    return VideoWindows(path, num_frames, fps, starts,
                        window_times(starts, num_frames, fps, settings.window_frames))


def decode_windows(path: str, num_frames: int, starts: Sequence[int], settings: WindowSettings) -> torch.Tensor:
    """``(len(starts), T, 3, S, S)`` uint8 views of the windows at ``starts`` (frames decoded once for all)."""
    from datasets.decoders import open_video

    indices = [clip_indices(int(s), num_frames, settings) for s in starts]
    with open_video(path, settings.decoder) as reader:
        frames = reader.get_frames(np.concatenate(indices))
    per = settings.num_frames
    return torch.stack([transform_clip(frames[i * per:(i + 1) * per], settings) for i in range(len(starts))])


class WindowBatches(torch.utils.data.Dataset):
    """Items ``{'video': i, 'first': k, 'clips': (B, T, 3, S, S) uint8}`` (or ``'error': reason``): batches of
    the windows of the planned videos, in order (every video's batches consecutive)."""

    def __init__(self, videos: Sequence[VideoWindows], settings: WindowSettings, batch: int):
        if batch < 1:
            raise ValueError(f"--batch {batch}: expected at least 1")
        self.videos = list(videos)
        self.settings = settings
        self.items: List[Tuple[int, int]] = [(v, k) for v, video in enumerate(self.videos)
                                             for k in range(0, len(video.starts), batch)]
        self.batch = batch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        from datasets.decoders import VideoDecodeError

        v, first = self.items[index]
        video = self.videos[v]
        starts = video.starts[first:first + self.batch]
        try:
            clips = decode_windows(video.path, video.num_frames, starts, self.settings)
        except VideoDecodeError as err:
            return {'video': v, 'first': first, 'error': err.reason}
        return {'video': v, 'first': first, 'clips': clips}


def first_item(items: list) -> dict:
    """``collate_fn`` of a DataLoader over ``WindowBatches`` with batch size 1: an item is already a batch."""
    return items[0]


def iterate_window_batches(videos: Sequence[VideoWindows], settings: WindowSettings, batch: int,
                           workers: int = 0) -> Iterator[dict]:
    """The items of ``WindowBatches`` in order, decoded by ``workers`` processes ahead of the caller."""
    dataset = WindowBatches(videos, settings, batch)
    if not len(dataset):
        return iter(())
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                                         collate_fn=first_item)
    return iter(loader)


def run_windows(model: torch.nn.Module, videos: Sequence[VideoWindows], settings: WindowSettings, batch: int,
                workers: int, amp_dtype: Optional[torch.dtype], pre_logits: bool, on_video, on_error,
                progress=None) -> None:
    """Forward every window of ``videos``; ``on_video(video, outputs [windows, C])`` once per finished video,
    ``on_error(video, reason)`` for one that fails while decoding (its partial outputs are dropped)."""
    current, parts, failed = None, [], set()

    def finish():
        if current is not None and current not in failed:
            on_video(videos[current], torch.cat(parts).numpy())

    for item in iterate_window_batches(videos, settings, batch, workers):
        v = item['video']
        if v != current:
            finish()
            current, parts = v, []
        if v in failed:
            continue
        if 'error' in item:
            failed.add(v)
            on_error(videos[v], item['error'])
            if progress is not None:   # its remaining windows will not be forwarded
                progress.update(len(videos[v].starts) - item['first'])
            continue
        parts.append(window_outputs(model, item['clips'], amp_dtype, pre_logits=pre_logits))
        if progress is not None:
            progress.update(item['clips'].shape[0])
    finish()


def plan_all(paths: Sequence[str], settings: WindowSettings) -> tuple:
    """``(planned videos, [(path, reason), ...] unreadable)``."""
    from datasets.decoders import VideoDecodeError

    planned, bad = [], []
    for path in paths:
        try:
            planned.append(plan_windows(path, settings))
        except VideoDecodeError as err:
            bad.append((path, err.reason))
    return planned, bad


def add_window_arguments(parser: argparse.ArgumentParser, stride_default: float = 1.0) -> None:
    """--stride, --window-frames, --crop (shared with ``tools.predict --timeline``)."""
    parser.add_argument('--stride', type=float, default=stride_default, metavar='SECONDS',
                        help=f'seconds between window centres (default {stride_default:g})')
    parser.add_argument('--window-frames', type=int, default=None, metavar='N',
                        help='video frames per window (default NUM_FRAMES x FRAME_INTERVAL)')
    parser.add_argument('--crop', default='center', choices=CROPS,
                        help="center: the evaluation's centre crop; full: the whole frame resized (default center)")


@torch.no_grad()
def window_outputs(model: torch.nn.Module, clips: torch.Tensor, amp_dtype: Optional[torch.dtype] = None,
                   pre_logits: bool = True) -> torch.Tensor:
    """float32 ``(B, C)``: pooled pre-logits features (or logits) of ``(B, T, 3, S, S)`` uint8 clips."""
    from datasets import normalize_clip

    device = next(model.parameters()).device
    x = normalize_clip(clips.to(device, non_blocking=True))
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model.forward_head(model.forward_features(x), pre_logits=pre_logits)
    return out.float().cpu()
