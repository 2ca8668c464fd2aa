"""Which frames of a video make a clip: segment (the original, TSN-style) and dense sampling.

Every function takes the video's frame count ``N`` and returns int64 frame indices in ``[0, N)``;
random choices come from an explicit ``numpy.random.Generator`` (never the global RNG), so a sample's
frames depend only on the seed the dataset derives for it.

Segment sampling (DATA.SAMPLING 'segment'), exactly the original's (spec 3.3; mmaction2 SampleFrames
with clip_len 1, num_clips T, frame_interval I). ``I`` = AUG.FRAME_INTERVAL is NOT a stride: it only
shortens the usable range to ``N - I + 1`` frames.

* train: ``seg = (N - I + 1) // T``.
  - ``seg > 0``: ``frame_i = i * seg + randint(0, seg - 1)`` (one random frame per segment);
  - else if ``N > max(T, I)``: ``T`` sorted uniform draws from ``[0, N - I]`` (with replacement);
  - else if ``seg == 0``: ``frame_i = round_half_even(i * (N - I + 1) / T)`` (NumPy's ``around``);
  - else (``N < I - 1``): all zeros.
* test, one clip (``K = 1``), the original's single-view rule: ``seg = (N - I + 1) / T`` (a float),
  ``frame_i = int(i * seg + seg / 2)`` (segment centres), all zeros when ``N <= I - 1``.
* test, clip ``k`` of ``K > 1`` (deterministic): the original drew its ``K`` clips as train-mode draws
  with ``I = 1``, i.e. one random frame inside each of its own segments of ``s = N // T`` frames
  (``[i * s, i * s + s - 1]``). Here clip ``k`` takes the frame at offset ``(k + 0.5) / K`` of each
  of those segments, ``frame_i = i * s + floor(s * (k + 0.5) / K)``, so every index lies where the
  original could have drawn it and the ``K`` clips spread evenly over each segment's range: the
  numbers estimate the original's protocol, and two evaluations give identical numbers. When
  ``s == 0`` (``N < T``) the original's draw is deterministic, ``round_half_even(i * N / T)``, and
  every clip is that one (an index that rounds up to ``N`` wraps to 0, as the original's 'loop' did).
  (An earlier rule here spread the clips over the single-view segments of ``(N - I + 1) / T`` frames;
  with T 8, I 4, K 4 it put 6.1% of the indices over N 8..400, 21.9% below N 100, outside the
  original's range.)
* test, ``random=True`` (TEST.RANDOM_CLIPS, the original's multi-clip rule itself): ``K``
  independent train-mode draws with ``I = 1``.

Dense sampling (DATA.SAMPLING 'dense'): ``T`` frames at stride ``s = FRAME_INTERVAL``, a window of
``L = (T - 1) * s + 1`` frames.

* train: ``start = randint(0, N - L)`` when ``N >= L``, else 0.
* test, clip ``k`` of ``K``: ``start = int((k + 0.5) * (N - L + 1) / K)`` when ``N >= L``, else 0
  (evenly spaced windows); ``random=True``: ``K`` train-mode draws.

In both modes, indices past the end wrap around modulo ``N`` (the original's 'loop'), so a video
shorter than the clip repeats from its start.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

SAMPLING_MODES = ('segment', 'dense')


def _check(num_video_frames: int, num_frames: int, interval: int) -> None:
    if num_video_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got {num_video_frames}")
    if num_frames <= 0 or interval <= 0:
        raise ValueError(f"NUM_FRAMES and FRAME_INTERVAL must be positive, got {num_frames}, {interval}")


def segment_train_indices(num_video_frames: int, num_frames: int, interval: int,
                          rng: np.random.Generator) -> np.ndarray:
    """The original's training rule: one random frame in each of ``num_frames`` segments."""
    _check(num_video_frames, num_frames, interval)
    n, t = num_video_frames, num_frames
    span = n - interval + 1
    seg = span // t
    if seg > 0:
        offsets = np.arange(t) * seg + rng.integers(0, seg, size=t)
    elif n > max(t, interval):
        offsets = np.sort(rng.integers(0, span, size=t))
    elif seg == 0:
        offsets = np.around(np.arange(t) * (span / t))
    else:
        offsets = np.zeros(t)
    return offsets.astype(np.int64) % n


def segment_test_indices(num_video_frames: int, num_frames: int, interval: int) -> np.ndarray:
    """The original's single-view test clip: the centre of each of ``num_frames`` segments."""
    _check(num_video_frames, num_frames, interval)
    n, t = num_video_frames, num_frames
    if n <= interval - 1:
        return np.zeros(t, dtype=np.int64)
    seg = (n - interval + 1) / float(t)
    offsets = (np.arange(t) * seg + seg / 2).astype(np.int64)
    return offsets % n


def segment_multi_clip_indices(num_video_frames: int, num_frames: int, clip: int,
                               num_clips: int) -> np.ndarray:
    """Clip ``clip`` of ``num_clips``: offset ``(clip + 0.5) / num_clips`` inside each of the original's
    multi-clip segments (``N // T`` frames; FRAME_INTERVAL does not enter, the original used 1)."""
    _check(num_video_frames, num_frames, 1)
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip index must be in [0, {num_clips}), got {clip}")
    n, t = num_video_frames, num_frames
    seg = n // t
    if seg == 0:  # N < T: the original's train-mode rule has no random choice here; its rounding can reach
        # N itself (N 1, T 8: around(7 / 8) = 1), which the original's 'loop' wrapped to frame 0, as here
        return np.around(np.arange(t) * (n / t)).astype(np.int64) % n
    # (2 clip + 1) seg // (2 num_clips) is floor(seg (clip + 0.5) / num_clips) in exact integers
    return np.arange(t, dtype=np.int64) * seg + (2 * clip + 1) * seg // (2 * num_clips)


def dense_train_indices(num_video_frames: int, num_frames: int, stride: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``num_frames`` frames ``stride`` apart from a random start."""
    _check(num_video_frames, num_frames, stride)
    window = (num_frames - 1) * stride + 1
    start = int(rng.integers(0, num_video_frames - window + 1)) if num_video_frames >= window else 0
    return (start + np.arange(num_frames, dtype=np.int64) * stride) % num_video_frames


def dense_test_indices(num_video_frames: int, num_frames: int, stride: int,
                       clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """Window ``clip`` of ``num_clips`` evenly spaced windows."""
    _check(num_video_frames, num_frames, stride)
    window = (num_frames - 1) * stride + 1
    start = 0
    if num_video_frames >= window:
        start = int((clip + 0.5) * (num_video_frames - window + 1) / num_clips)
    return (start + np.arange(num_frames, dtype=np.int64) * stride) % num_video_frames


class FrameSampler:
    """Frame indices of training clips and test views for one sampling mode.

    Args:
        num_frames: frames per clip (DATA.NUM_FRAMES).
        interval: AUG.FRAME_INTERVAL (segment: frames reserved at the end; dense: the stride).
        mode: 'segment' (the original) or 'dense'.
        random_test_clips: TEST.RANDOM_CLIPS; multi-clip test views are drawn like training clips
            (the original's behaviour, with interval 1 for segment sampling).
    """

    def __init__(self, num_frames: int, interval: int, mode: str = 'segment',
                 random_test_clips: bool = False):
        if mode not in SAMPLING_MODES:
            raise ValueError(f"DATA.SAMPLING: expected one of {list(SAMPLING_MODES)}, got {mode!r}")
        self.num_frames = int(num_frames)
        self.interval = int(interval)
        self.mode = mode
        self.random_test_clips = bool(random_test_clips)

    def min_frames(self) -> int:
        """Frames a video needs so that no index repeats (shorter videos wrap around)."""
        if self.mode == 'dense':
            return (self.num_frames - 1) * self.interval + 1
        return self.num_frames + self.interval - 1

    def train(self, num_video_frames: int, rng: np.random.Generator) -> np.ndarray:
        """(T,) frame indices of one training clip."""
        if self.mode == 'dense':
            return dense_train_indices(num_video_frames, self.num_frames, self.interval, rng)
        return segment_train_indices(num_video_frames, self.num_frames, self.interval, rng)

    def test(self, num_video_frames: int, num_clips: int = 1,
             rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """(K, T) frame indices of ``num_clips`` test clips.

        The original used its random multi-clip rule only when K > 1; single-clip testing was always
        the deterministic centre rule, and so it is here. For K > 1 segment sampling places the clips
        deterministically inside the original's random range (``segment_multi_clip_indices``).
        """
        if self.random_test_clips and num_clips > 1:
            if rng is None:
                raise ValueError("TEST.RANDOM_CLIPS needs a random generator")
            if self.mode == 'dense':
                clips = [dense_train_indices(num_video_frames, self.num_frames, self.interval, rng)
                         for _ in range(num_clips)]
            else:
                clips = [segment_train_indices(num_video_frames, self.num_frames, 1, rng)
                         for _ in range(num_clips)]
            return np.stack(clips)
        if self.mode == 'dense':
            clips = [dense_test_indices(num_video_frames, self.num_frames, self.interval, k, num_clips)
                     for k in range(num_clips)]
        elif num_clips == 1:
            clips = [segment_test_indices(num_video_frames, self.num_frames, self.interval)]
        else:
            clips = [segment_multi_clip_indices(num_video_frames, self.num_frames, k, num_clips)
                     for k in range(num_clips)]
        return np.stack(clips)

    def __repr__(self) -> str:
        return (f"FrameSampler(num_frames={self.num_frames}, interval={self.interval}, mode={self.mode!r}, "
                f"random_test_clips={self.random_test_clips})")
