"""Frame indices of every sampler against hand-computed values (spec 3.3), short videos included."""
import numpy as np
import pytest

from datasets.sampling import (FrameSampler, dense_test_indices, dense_train_indices, segment_multi_clip_indices,
                               segment_test_indices, segment_train_indices)


class ScriptedRng:
    """Stands in for numpy's Generator: returns scripted draws and records how it was asked."""

    def __init__(self, *draws):
        self.draws = list(draws)
        self.calls = []

    def integers(self, low, high=None, size=None):
        self.calls.append((low, high, size))
        return np.asarray(self.draws.pop(0))


def test_segment_train_one_random_frame_per_segment():
    # N=100, T=8, I=4: seg = (100 - 4 + 1) // 8 = 12, frame_i = 12 i + r_i with r_i in [0, 11]
    rng = ScriptedRng([0, 11, 5, 3, 7, 1, 0, 11])
    got = segment_train_indices(100, 8, 4, rng)
    assert rng.calls == [(0, 12, 8)]
    assert got.tolist() == [0, 23, 29, 39, 55, 61, 72, 95]
    assert got.dtype == np.int64


def test_segment_train_short_video_sorted_draws():
    # N=10 > max(T=8, I=4) but seg = 7 // 8 = 0: 8 sorted draws from [0, N - I] = [0, 6]
    rng = ScriptedRng([6, 0, 3, 3, 1, 5, 2, 4])
    assert segment_train_indices(10, 8, 4, rng).tolist() == [0, 1, 2, 3, 3, 4, 5, 6]
    assert rng.calls == [(0, 7, 8)]


def test_segment_train_short_video_rounded_ratio():
    # N=8 = T: seg = 5 // 8 = 0 and N > max(8, 4) fails -> around(i * 5 / 8), NumPy rounds half to even (2.5 -> 2)
    rng = ScriptedRng()
    assert segment_train_indices(8, 8, 4, rng).tolist() == [0, 1, 1, 2, 2, 3, 4, 4]
    assert rng.calls == []
    # N=3, I=4: span 0 -> all zeros; N=2 < I - 1: the last branch, zeros too
    assert segment_train_indices(3, 8, 4, rng).tolist() == [0] * 8
    assert segment_train_indices(2, 8, 4, rng).tolist() == [0] * 8
    # N < T with I = 1: span 5 -> around(i * 5 / 8)
    assert segment_train_indices(5, 8, 1, rng).tolist() == [0, 1, 1, 2, 2, 3, 4, 4]


def test_segment_train_real_generator_stays_in_segments():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 8, 9, 11, 40, 301):
        for _ in range(20):
            idx = segment_train_indices(n, 8, 4, rng)
            assert idx.shape == (8,) and idx.min() >= 0 and idx.max() < n
            assert (np.diff(idx) >= 0).all()
    idx = np.stack([segment_train_indices(100, 8, 4, rng) for _ in range(200)])
    for i in range(8):
        assert idx[:, i].min() >= 12 * i and idx[:, i].max() <= 12 * i + 11


def test_segment_test_centres_match_the_original():
    # seg = 97 / 8 = 12.125, frame_i = int(12.125 i + 6.0625)
    assert segment_test_indices(100, 8, 4).tolist() == [6, 18, 30, 42, 54, 66, 78, 90]
    # N=5: seg = 2 / 8 = 0.25 -> int(0.25 i + 0.125)
    assert segment_test_indices(5, 8, 4).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # N <= I - 1: zeros (the original's short-video branch)
    assert segment_test_indices(3, 8, 4).tolist() == [0] * 8


def test_segment_multi_clip_offsets_are_deterministic_and_evenly_spaced():
    sampler = FrameSampler(8, 4, 'segment')
    # K clips use the original's multi-clip segments, 100 // 8 = 12 frames (interval 1), at offsets
    # floor(12 (k + 0.5) / K): K 2 -> 3, 9; K 4 -> 1, 4, 7, 10
    assert sampler.test(100, num_clips=2).tolist() == [[3, 15, 27, 39, 51, 63, 75, 87], [9, 21, 33, 45, 57, 69, 81, 93]]
    assert sampler.test(100, num_clips=4)[:, 0].tolist() == [1, 4, 7, 10]
    assert (np.diff(sampler.test(100, num_clips=4), axis=1) == 12).all()
    # 20 // 8 = 2 frames per segment, 3 clips: offsets floor(2/6), floor(6/6), floor(10/6) = 0, 1, 1
    assert sampler.test(20, num_clips=3)[:, :3].tolist() == [[0, 2, 4], [1, 3, 5], [1, 3, 5]]
    assert (sampler.test(100, 1) == segment_test_indices(100, 8, 4)).all()
    assert (sampler.test(100, 4) == sampler.test(100, 4)).all()
    # N < T: the original's draw is the deterministic around(i * N / T), the same for every clip
    assert sampler.test(5, 3).tolist() == [[0, 1, 1, 2, 2, 3, 4, 4]] * 3
    with pytest.raises(ValueError, match='clip index'):
        segment_multi_clip_indices(100, 8, clip=2, num_clips=2)


def _original_single_view(n, t, interval):
    """Spec 3.3, single-view test: int(i * seg + seg / 2) with seg = (N - I + 1) / T; zeros if N <= I - 1."""
    if n <= interval - 1:
        return [0] * t
    seg = (n - interval + 1) / t
    return [int(i * seg + seg / 2) % n for i in range(t)]


def _original_multi_clip_range(n, t):
    """Spec 3.3, multi-clip test: the (low, high) each index of a train-mode draw with I = 1 can take."""
    seg = n // t
    if seg > 0:
        return [(i * seg, i * seg + seg - 1) for i in range(t)]
    # N < T: no random choice (and N > max(T, 1) fails); an index rounded up to N is read as frame 0 ('loop')
    index = np.around(np.arange(t) * (n / t)).astype(int) % n
    return [(int(v), int(v)) for v in index]


@pytest.mark.parametrize('num_frames,interval', [(8, 4), (8, 1), (8, 2), (16, 4), (4, 3)])
def test_multi_clip_grid_stays_in_the_originals_ranges(num_frames, interval):
    sampler = FrameSampler(num_frames, interval, 'segment')
    for n in range(8, 401):
        low, high = np.array(_original_multi_clip_range(n, num_frames)).T
        seg = n // num_frames
        for num_clips in (1, 2, 3, 4):
            clips = sampler.test(n, num_clips)
            assert clips.shape == (num_clips, num_frames) and clips.dtype == np.int64
            if num_clips == 1:  # the original's single view, unchanged
                assert clips[0].tolist() == _original_single_view(n, num_frames, interval), n
                continue
            assert ((low <= clips) & (clips <= high)).all(), (n, num_clips)
            if seg > 0:
                # clip k holds the frame under the point (k + 0.5) / K of every segment, in exact integers:
                # offset <= seg (2k + 1) / 2K < offset + 1
                offset, point = (clips - low) * 2 * num_clips, seg * (2 * np.arange(num_clips)[:, None] + 1)
                assert ((offset <= point) & (point < offset + 2 * num_clips)).all(), (n, num_clips)
            if seg >= num_clips:  # segments long enough: K different, ordered offsets
                assert (np.diff(clips[:, 0]) > 0).all()


def test_multi_clip_ranges_are_those_of_the_originals_draws():
    """The ranges the grid test uses are exactly what the original's rule draws (interval 1, many draws)."""
    rng = np.random.default_rng(0)
    for n in (8, 9, 15, 31, 100, 203):
        draws = np.stack([segment_train_indices(n, 8, 1, rng) for _ in range(400)])
        assert [(int(lo), int(hi)) for lo, hi in zip(draws.min(0), draws.max(0))] == \
            _original_multi_clip_range(n, 8)
    # N < T (16 frames from a 9-frame video): every draw is the same
    assert (segment_train_indices(9, 16, 1, rng) == segment_multi_clip_indices(9, 16, 0, 2)).all()


def test_multi_clip_grid_ignores_the_interval():
    # the original drew its K clips with interval 1 whatever FRAME_INTERVAL was
    for n in (8, 11, 37, 100, 257):
        first = FrameSampler(8, 1, 'segment').test(n, 4)
        for interval in (2, 4, 8):
            assert (FrameSampler(8, interval, 'segment').test(n, 4) == first).all()


def test_random_test_clips_are_the_original_train_draws_with_interval_one():
    sampler = FrameSampler(8, 4, 'segment', random_test_clips=True)
    rng = ScriptedRng([0] * 8, [11] * 8)
    clips = sampler.test(100, num_clips=2, rng=rng)
    assert rng.calls == [(0, 12, 8), (0, 12, 8)]     # seg = 100 // 8 with I = 1
    assert clips[0].tolist() == [0, 12, 24, 36, 48, 60, 72, 84]
    assert clips[1].tolist() == [11, 23, 35, 47, 59, 71, 83, 95]
    # a single clip stays the deterministic centre rule, as in the original
    assert (sampler.test(100, 1) == segment_test_indices(100, 8, 4)).all()
    with pytest.raises(ValueError, match='random generator'):
        sampler.test(100, 2)


def test_dense_train_and_test():
    # T=8 at stride 4: a window of 29 frames; N=100 -> start in [0, 71]
    rng = ScriptedRng(17)
    assert dense_train_indices(100, 8, 4, rng).tolist() == [17, 21, 25, 29, 33, 37, 41, 45]
    assert rng.calls == [(0, 72, None)]
    # three evenly spaced windows: start = int((k + 0.5) * 72 / 3) = 12, 36, 60
    sampler = FrameSampler(8, 4, 'dense')
    assert sampler.test(100, 3)[:, 0].tolist() == [12, 36, 60]
    assert (np.diff(sampler.test(100, 3), axis=1) == 4).all()
    assert dense_test_indices(100, 8, 4).tolist() == [36 + 4 * i for i in range(8)]
    # exactly the window length: the only start is 0
    assert dense_train_indices(29, 8, 4, np.random.default_rng(0)).tolist() == list(range(0, 29, 4))


def test_dense_short_video_wraps_around():
    # N=20 < 29: start 0 and indices wrap modulo N (the original's 'loop')
    assert dense_train_indices(20, 8, 4, ScriptedRng()).tolist() == [0, 4, 8, 12, 16, 0, 4, 8]
    assert dense_test_indices(20, 8, 4, clip=1, num_clips=2).tolist() == [0, 4, 8, 12, 16, 0, 4, 8]
    # shorter than the stride
    assert dense_train_indices(3, 4, 4, ScriptedRng()).tolist() == [0, 1, 2, 0]


def test_min_frames_and_bad_arguments():
    assert FrameSampler(8, 4, 'segment').min_frames() == 11
    assert FrameSampler(8, 4, 'dense').min_frames() == 29
    with pytest.raises(ValueError, match='DATA.SAMPLING'):
        FrameSampler(8, 4, 'uniform')
    with pytest.raises(ValueError, match='at least one frame'):
        segment_test_indices(0, 8, 4)


@pytest.mark.parametrize('num_frames', [1, 3, 4, 8, 16])
@pytest.mark.parametrize('mode', ['segment', 'dense'])
def test_every_mode_gives_valid_indices_for_every_video_length(num_frames, mode):
    """N = 1..3T, every interval, train / 1 clip / K clips / random clips: indices in [0, N), short videos
    repeat frames (N 1, T 8, K 2 used to reach index N through the rounding of the N < T branch)."""
    rng = np.random.default_rng(0)
    for interval in (1, 2, 3, 4, 8):
        fixed = FrameSampler(num_frames, interval, mode)
        drawn = FrameSampler(num_frames, interval, mode, random_test_clips=True)
        for n in range(1, 3 * num_frames + 1):
            views = [fixed.train(n, rng)[None]] + [s.test(n, k, rng=rng) for s in (fixed, drawn) for k in (1, 2, 3, 5)]
            for idx in views:
                assert idx.dtype == np.int64 and idx.shape[1] == num_frames, (interval, n)
                assert idx.min() >= 0 and idx.max() < n, (mode, interval, n, idx.tolist())


def test_one_frame_video_multi_clip_wraps_like_the_original():
    # around(i * 1 / 8) is 1 = N for i >= 4; the original's 'loop' read frame 1 % 1 = 0
    assert segment_multi_clip_indices(1, 8, 0, 2).tolist() == [0] * 8
    # N 3, T 4: around(0, .75, 1.5, 2.25) = 0, 1, 2, 2 (no wrap needed, numerics unchanged)
    assert segment_multi_clip_indices(3, 4, 1, 2).tolist() == [0, 1, 2, 2]
