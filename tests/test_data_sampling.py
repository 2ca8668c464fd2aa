"""Frame indices of every sampler against hand-computed values (spec 3.3), short videos included."""
import numpy as np
import pytest

from datasets.sampling import (FrameSampler, dense_test_indices, dense_train_indices, segment_test_indices,
                               segment_train_indices)


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
    clips = sampler.test(100, num_clips=2)
    # offsets 0.25 and 0.75 of each 12.125-frame segment
    assert clips.tolist() == [[3, 15, 27, 39, 51, 63, 75, 87], [9, 21, 33, 45, 57, 69, 81, 93]]
    assert (sampler.test(100, 1) == segment_test_indices(100, 8, 4)).all()
    assert (sampler.test(100, 4) == sampler.test(100, 4)).all()


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
