"""datasets.resize: sizes, frames and timestamps kept, keyframe interval, audio dropped, failures listed,
resumption after a kill, argument errors."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

av = pytest.importorskip('av')

from datasets import resize  # noqa: E402
from datasets.decoders import open_video, write_video  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif('libx264' not in av.codecs_available, reason='PyAV without libx264')


def moving_frames(num_frames, height, width, seed=0):
    """Smooth frames with a moving bright block (cheap to encode, different from frame to frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 180 // width + 30, yy * 180 // height + 30, np.full_like(xx, 100)], -1)
    frames = np.repeat(base[None].astype(np.uint8), num_frames, axis=0)
    offset = rng.integers(0, width // 2)
    for i in range(num_frames):
        x = (offset + 2 * i) % (width - 8)
        frames[i, height // 3:height // 3 + 8, x:x + 8] = 250
    return frames


def write_with_audio(path, frames, fps=25):
    """mp4 with an H.264 video stream and an AAC audio stream."""
    with av.open(path, 'w') as container:
        video = container.add_stream('libx264', rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
        audio = container.add_stream('aac', rate=8000)
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
                container.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
        samples.sample_rate = 8000
        for packet in list(audio.encode(samples)) + list(audio.encode()) + list(video.encode()):
            container.mux(packet)
    return path


def video_facts(path):
    """(frames, width, height, fps, audio streams, keyframe positions, frame times in seconds)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        order = sorted(range(len(packets)), key=lambda i: packets[i].pts)
        keyframes = sorted(order.index(i) for i, p in enumerate(packets) if p.is_keyframe)
        times = sorted(float(p.pts * stream.time_base) for p in packets)
        return (len(packets), stream.codec_context.width, stream.codec_context.height,
                float(stream.average_rate), len(container.streams.audio), keyframes, times)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp('resize_src')
    (root / 'class_a').mkdir()
    (root / 'class_b' / 'deeper').mkdir(parents=True)
    landscape = moving_frames(40, 60, 80)
    paths = {
        'landscape': write_with_audio(str(root / 'class_a' / 'wide.mp4'), landscape),
        'portrait': write_video(str(root / 'class_b' / 'deeper' / 'tall.webm'),
                                np.ascontiguousarray(landscape[:30].transpose(0, 2, 1, 3)), fps=30,
                                codec='libvpx-vp9'),
        'small': write_video(str(root / 'class_b' / 'small.mp4'), moving_frames(20, 24, 32, seed=1), fps=25),
        # MPEG-TS: its muxer starts the timestamps above 0, unlike mp4 and webm
        'offset': write_video(str(root / 'class_a' / 'late_start.ts'), moving_frames(25, 60, 80, seed=2), fps=25),
        'garbage': str(root / 'class_b' / 'garbage.mp4'),
        'truncated': str(root / 'class_a' / 'truncated.mp4'),
    }
    with open(paths['garbage'], 'wb') as f:
        f.write(b'this is not a video ' * 40)
    with open(paths['landscape'], 'rb') as f:
        data = f.read()
    with open(paths['truncated'], 'wb') as f:    # the mp4 index sits at the end: cut, it is lost
        f.write(data[:len(data) // 2])
    (root / 'class_a' / 'notes.txt').write_text('not a video, ignored\n')
    return root, paths


def run_resize(capsys, *args):
    """``python -m datasets.resize ARGS`` in this process (a new interpreter would spend seconds
    importing the package); a CompletedProcess with the exit status and the captured output."""
    capsys.readouterr()
    status = resize.main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def test_output_size():
    assert resize.output_size(340, 256, 320) == (340, 256)                 # already smaller: kept
    assert resize.output_size(340, 256, 320, upscale=True) == (426, 320)   # 425 -> nearest even
    assert resize.output_size(1920, 1080, 320) == (568, 320)
    assert resize.output_size(1080, 1920, 320) == (320, 568)
    assert resize.output_size(640, 640, 320) == (320, 320)
    assert resize.output_size(81, 61, 0) == (80, 60)                       # 0: keep, made even
    with pytest.raises(ValueError, match='positive size'):
        resize.output_size(0, 10, 320)


def test_resize_a_folder(sources, tmp_path, capsys):
    src_root, paths = sources
    dst = tmp_path / 'out'
    result = run_resize(capsys, src_root, dst, '--short-side', 32, '--gop', 4, '--workers', 2)
    assert result.returncode == 4, result.stderr          # two sources are broken
    outputs = sorted(os.path.relpath(os.path.join(d, f), dst) for d, _, fs in os.walk(dst) for f in fs)
    assert outputs == ['class_a/late_start.mp4', 'class_a/wide.mp4', 'class_b/deeper/tall.mp4',
                       'class_b/small.mp4', 'failed.txt']
    expected = {  # target: (source, frames, width, height, fps)
        'class_a/wide.mp4': (paths['landscape'], 40, 42, 32, 25),
        'class_b/deeper/tall.mp4': (paths['portrait'], 30, 32, 42, 30),
        'class_b/small.mp4': (paths['small'], 20, 32, 24, 25),      # short side 24 < 32: kept
        'class_a/late_start.mp4': (paths['offset'], 25, 42, 32, 25),
    }
    for name, (source, frames, width, height, fps) in expected.items():
        n, w, h, rate, audio, keyframes, times = video_facts(str(dst / name))
        assert (n, w, h, audio) == (frames, width, height, 0) and rate == pytest.approx(fps, rel=1e-3), name
        gaps = np.diff(keyframes + [n])
        assert keyframes[0] == 0 and gaps.max() <= 4, (name, keyframes)
        src_times = video_facts(source)[6]
        assert times == pytest.approx(src_times, abs=1e-3), name       # timestamps pass through
        with open_video(str(dst / name), 'pyav') as out, open_video(source, 'pyav') as ref:
            # same picture, smaller: compare the block-averaged source with the output
            a = out.get_frames(range(frames)).astype(float).mean(axis=(1, 2))
            b = ref.get_frames(range(frames)).astype(float).mean(axis=(1, 2))
            assert np.abs(a - b).max() < 6, name
    assert video_facts(paths['offset'])[6][0] > 0         # the MPEG-TS source really starts late
    failed = (dst / 'failed.txt').read_text().splitlines()
    reasons = dict(line.split('\t') for line in failed)
    assert sorted(reasons) == sorted([paths['garbage'], paths['truncated']])
    assert all(reason.startswith('cannot open') for reason in reasons.values()), reasons
    assert 'FAILED' in result.stderr and '4 converted, 0 already done, 2 failed' in result.stdout
    assert 'eta' in result.stderr                          # the progress bar


def test_rerun_skips_finished_files_and_redoes_broken_targets(sources, tmp_path, capsys):
    _, paths = sources
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    (src / 'sub').mkdir(parents=True)
    shutil.copy(paths['small'], src / 'sub' / 'small.mp4')
    shutil.copy(paths['landscape'], src / 'wide.mp4')
    shutil.copy(paths['garbage'], src / 'garbage.mp4')
    (dst / 'sub').mkdir(parents=True)
    (dst / 'sub' / 'small.mp4').write_bytes(b'left over from a crashed tool')   # not a video: redone
    first = run_resize(capsys, src, dst, '--short-side', 32, '--no-progress')
    assert first.returncode == 4 and '2 converted, 0 already done, 1 failed' in first.stdout
    assert video_facts(str(dst / 'sub' / 'small.mp4'))[0] == 20
    assert (dst / 'failed.txt').exists()
    stamps = {p: os.stat(p).st_mtime_ns for p in map(str, dst.rglob('*.mp4'))}
    os.remove(src / 'garbage.mp4')
    again = run_resize(capsys, src, dst, '--short-side', 32, '--no-progress')
    assert again.returncode == 0, again.stderr
    assert '0 converted, 2 already done, 0 failed' in again.stdout
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    assert not (dst / 'failed.txt').exists()               # no failure left: the stale list is removed


SLOW_RUN = """
import sys, time
from datasets import resize
original = resize._frame_timestamps
def slow(frames, step):   # about 1 s per video, so that the kill lands in the middle of one
    for frame in original(frames, step):
        time.sleep(0.04)
        yield frame
resize._frame_timestamps = slow
sys.exit(resize.main(sys.argv[1:]))
"""


@pytest.mark.slow   # a fresh interpreter imports the package: ~5-15 s
def test_a_killed_run_leaves_only_complete_videos_and_resumes(tmp_path, capsys):
    src, dst = tmp_path / 'src', tmp_path / 'dst'
    src.mkdir()
    for i in range(4):
        write_video(str(src / f'v{i}.mp4'), moving_frames(25, 24, 32, seed=i), fps=25)
    proc = subprocess.Popen([sys.executable, '-c', SLOW_RUN, str(src), str(dst), '--workers', '1',
                             '--no-progress'], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        # wait until the second video is being written (its temporary file exists), then kill
        while not (dst / '.v1.mp4.tmp').exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    finished = sorted(p.name for p in dst.iterdir() if not p.name.startswith('.'))
    assert 1 <= len(finished) < 4, finished
    for name in finished:                        # every file under its final name is whole
        assert video_facts(str(dst / name))[0] == 25, name
    leftovers = [p.name for p in dst.iterdir() if p.name.startswith('.')]
    assert leftovers == ['.v1.mp4.tmp'], leftovers   # the interrupted one, hidden and not *.mp4

    result = run_resize(capsys, src, dst, '--workers', '1', '--no-progress')
    assert result.returncode == 0, result.stderr
    assert f"{4 - len(finished)} converted, {len(finished)} already done, 0 failed" in result.stdout
    assert sorted(p.name for p in dst.iterdir()) == ['v0.mp4', 'v1.mp4', 'v2.mp4', 'v3.mp4']
    for i in range(4):
        assert video_facts(str(dst / f'v{i}.mp4'))[0] == 25


def test_one_file_and_argument_errors(sources, tmp_path, capsys):
    _, paths = sources
    out = tmp_path / 'one.mkv'
    assert run_resize(capsys, paths['small'], out, '--ext', '.mkv', '--gop', 1).returncode == 0
    n, _, _, _, _, keyframes, _ = video_facts(str(out))
    assert n == 20 and keyframes == list(range(20))      # --gop 1: every frame a keyframe
    failed = run_resize(capsys, paths['garbage'], tmp_path / 'x.mp4')
    assert failed.returncode == 4 and 'cannot open' in failed.stderr
    assert not (tmp_path / 'x.mp4').exists() and not (tmp_path / '.x.mp4.tmp').exists()
    for args, message in [((tmp_path / 'nope', tmp_path / 'o'), 'no such file or folder'),
                          ((tmp_path, tmp_path), 'must differ from SRC'),
                          ((paths['small'], tmp_path / 'o', '--ext', '.avi'), '--ext .avi: expected one of'),
                          ((paths['small'], tmp_path / 'o', '--gop', 0), '--gop 0: expected an integer >= 1')]:
        result = run_resize(capsys, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_two_sources_with_one_target_are_refused(tmp_path, capsys):
    (tmp_path / 'src').mkdir()
    frames = moving_frames(4, 24, 32)
    write_video(str(tmp_path / 'src' / 'a.mp4'), frames)
    write_video(str(tmp_path / 'src' / 'a.mkv'), frames)
    result = run_resize(capsys, tmp_path / 'src', tmp_path / 'dst')
    assert result.returncode == 2 and 'would both be written to' in result.stderr
    assert not (tmp_path / 'dst').exists()
