"""Decoder backends: identical frames on H.264 mp4 and VP9 webm, every unreadable case as VideoDecodeError."""
import numpy as np
import pytest

from datasets import decoders
from datasets.decoders import VideoDecodeError, available_backends, open_video, write_video
from video_helpers import make_unreadable, stamped_frames

BACKENDS = available_backends()
pytestmark = pytest.mark.skipif(not BACKENDS, reason='no video decoder installed')


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp('decoders')
    frames = stamped_frames()
    paths = {
        # short GOPs with B-frames, so that seeking and frame reordering are exercised
        'mp4': write_video(str(root / 'a.mp4'), frames, options={'g': 8, 'bf': 2}),
        'webm': write_video(str(root / 'a.webm'), frames, codec='libvpx-vp9', options={'g': 8}),
        'faststart': write_video(str(root / 'fast.mp4'), frames, faststart=True),
    }
    return root, paths, frames


@pytest.mark.parametrize('kind', ['mp4', 'webm'])
def test_backends_give_identical_frames(videos, kind):
    if len(BACKENDS) < 2:
        pytest.skip('needs both decord and PyAV')
    _, paths, frames = videos
    readers = [open_video(paths[kind], backend) for backend in ('decord', 'pyav')]
    for reader in readers:
        assert (reader.num_frames, reader.height, reader.width) == (45, 24, 32)
        assert reader.fps == pytest.approx(30.0)
    everything = [r.get_frames(range(45)) for r in readers]
    assert (everything[0] == everything[1]).all()
    # the decode is close to the source (lossy codec) and in the right order (the stamp)
    assert np.abs(everything[0].astype(int) - frames.astype(int)).mean() < 12
    block_x = everything[0][:, 10:16].mean(axis=(1, 3)).reshape(45, -1)      # (frame, column)
    block_x = np.array([np.convolve(row, np.ones(6), 'valid').argmax() for row in block_x])
    assert (np.abs(block_x - (np.arange(45) * 2) % 26) <= 1).all()
    rng = np.random.default_rng(0)
    for _ in range(6):   # random subsets, unsorted, with repeats
        idx = rng.integers(0, 45, size=rng.integers(1, 10))
        a, b = (r.get_frames(idx) for r in readers)
        assert (a == b).all() and (a == everything[0][idx]).all()


@pytest.mark.parametrize('backend', BACKENDS)
def test_get_frames_edge_cases(videos, backend):
    _, paths, _ = videos
    with open_video(paths['mp4'], backend) as reader:
        assert reader.get_frames([]).shape == (0, 24, 32, 3)
        assert reader.get_frames([44, 0, 44]).shape == (3, 24, 32, 3)
        with pytest.raises(ValueError, match=r'\[0, 45\)'):
            reader.get_frames([45])


EXPECTED = {'missing': 'file not found', 'empty': 'empty file', 'truncated': 'cannot open',
            'garbage': 'cannot open', 'zero_frames': '', 'header_claims_more': 'header claims 45 frames',
            'directory': 'is a directory'}


@pytest.mark.parametrize('backend', BACKENDS)
def test_every_unreadable_case_raises_video_decode_error(videos, backend):
    root, paths, _ = videos
    cases = make_unreadable(root, paths['mp4'], paths['faststart'])
    for name, path in cases.items():
        with pytest.raises(VideoDecodeError) as info:
            with open_video(path, backend) as reader:
                reader.get_frames([0, reader.num_frames - 1])
        assert info.value.path == path and info.value.reason, name
        assert EXPECTED[name] in info.value.reason, (name, info.value.reason)
        assert str(info.value).startswith(path)


def test_decoder_exceptions_are_mapped(videos, monkeypatch):
    _, paths, _ = videos
    if 'decord' in BACKENDS:
        reader = open_video(paths['mp4'], 'decord')

        class Broken:
            def get_batch(self, indices):
                raise RuntimeError('[10:00:00] /src/video_reader.cc:1: Error: decoder exploded')

        reader._reader = Broken()
        with pytest.raises(VideoDecodeError, match='decoder exploded'):
            reader.get_frames([3])
    reader = open_video(paths['mp4'], 'pyav')
    monkeypatch.setattr(reader, '_decode_seeking', lambda wanted: 1 / 0)
    with pytest.raises(VideoDecodeError, match='ZeroDivisionError'):
        reader.get_frames([3])


def test_error_survives_pickling():
    import pickle
    err = pickle.loads(pickle.dumps(VideoDecodeError('/x.mp4', 'file not found')))
    assert (err.path, err.reason, str(err)) == ('/x.mp4', 'file not found', '/x.mp4: file not found')


def test_backend_choice(monkeypatch):
    assert decoders.resolve_backend('auto') == BACKENDS[0]
    with pytest.raises(ValueError, match='DATA.DECODER'):
        open_video('x.mp4', 'opencv')
    monkeypatch.setattr(decoders, 'available_backends', lambda: ['pyav'])
    assert decoders.resolve_backend('auto') == 'pyav'
    with pytest.raises(ImportError, match="'decord' is not installed"):
        decoders.resolve_backend('decord')


class CountingContainer:
    """Wraps a PyAV container to count the seeks and the decoded frames of a reader."""

    def __init__(self, container):
        self._container, self.seeks, self.decoded = container, 0, 0

    def seek(self, *args, **kwargs):
        self.seeks += 1
        return self._container.seek(*args, **kwargs)

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame

    def __getattr__(self, name):
        return getattr(self._container, name)


@pytest.fixture(scope='module')
def gop_videos(tmp_path_factory):
    """60 frames each: H.264 keyframe every 6 (B-frames), all-intra, VP9 every 6, MPEG-TS (timestamps
    starting above 0, a demuxer that seeks by decoding time) every 6."""
    if 'pyav' not in BACKENDS:
        pytest.skip('needs PyAV')
    root = tmp_path_factory.mktemp('gops')
    frames = stamped_frames(num_frames=60, seed=3)
    return {
        'h264_gop6': write_video(str(root / 'g6.mp4'), frames, options={'g': 6, 'bf': 2}),
        'h264_intra': write_video(str(root / 'g1.mp4'), frames, options={'g': 1}),
        'vp9_gop6': write_video(str(root / 'g6.webm'), frames, codec='libvpx-vp9', options={'g': 6}),
        'mpegts_gop6': write_video(str(root / 'g6.ts'), frames, options={'g': 6, 'bf': 2}),
    }


@pytest.mark.parametrize('kind', ['h264_gop6', 'h264_intra', 'vp9_gop6', 'mpegts_gop6'])
def test_pyav_seeking_is_frame_exact_and_skips_work(gop_videos, kind):
    path = gop_videos[kind]
    with open_video(path, 'pyav') as reader:
        assert reader.num_frames == 60
        through = reader._decode_sequential(list(range(60)))       # every frame, no seek
    if kind == 'mpegts_gop6':
        import av
        with av.open(path) as container:      # the case the dts fallback is for
            stream = container.streams.video[0]
            assert min(p.pts for p in container.demux(stream) if p.size) > 0
    rng = np.random.default_rng(1)
    subsets = [[3, 17, 31, 45, 59], [0, 1, 2, 30], [59], sorted(rng.choice(60, 8, replace=False))]
    for indices in subsets:
        with open_video(path, 'pyav') as reader:
            counter = reader._container = CountingContainer(reader._container)
            got = reader.get_frames(indices)
            assert reader._timestamps_known, 'fell back to decoding from the start'
            assert reader._seek_by_dts == (kind == 'mpegts_gop6')   # MPEG-TS seeks by decoding time
        assert (got == np.stack([through[i] for i in indices])).all(), (kind, indices)
        if indices == [3, 17, 31, 45, 59]:      # sparse: seeks to 4-5 keyframes, decodes a fraction
            assert counter.seeks >= 4 and counter.decoded < 30, (counter.seeks, counter.decoded)


@pytest.mark.skipif(len(BACKENDS) < 2, reason='needs both decord and PyAV')
@pytest.mark.parametrize('kind', ['h264_gop6', 'h264_intra', 'vp9_gop6'])
def test_decord_batches_match_pyav_on_short_gops(gop_videos, kind):
    with open_video(gop_videos[kind], 'decord') as a, open_video(gop_videos[kind], 'pyav') as b:
        for indices in ([3, 17, 31, 45, 59], [0, 1, 2, 30], list(range(0, 60, 7))):
            assert (a.get_frames(indices) == b.get_frames(indices)).all(), (kind, indices)
