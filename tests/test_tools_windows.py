"""tools/extract_features.py and tools/predict.py --timeline: sliding windows over whole tiny videos."""
import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import normalize_clip, write_video
from datasets.decoders import open_video
from datasets.transforms import EvalTransform, frames_to_tensor
from engine.checkpoint import save_checkpoint
from engine.config import config_to_yaml, load_config
from engine_helpers import REPO, env
from models import build_model
from tools import extract_features, predict
from tools import windows as W

NAMES = ['waving', 'high five, both hands', 'nodding']
FPS, SECONDS, SIZE, FRAMES = 10, 10, 32, 4


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def moving_block(num_frames, seed=0, height=32, width=40):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 80, (num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        x = (3 * t) % (width - 8)
        frames[t, 8:20, x:x + 8] = 255
    return frames


@pytest.fixture(scope='module')
def setup(tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp('windows')
    videos = tmp / 'videos'
    videos.mkdir()
    write_video(str(videos / 'ten.mp4'), moving_block(FPS * SECONDS), fps=FPS)   # 10 s, 40x32: not square
    write_video(str(videos / 'short.mp4'), moving_block(3, seed=1), fps=FPS)     # shorter than a window
    (videos / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')
    (tmp / 'labels.csv').write_text('id,name\n' + ''.join(f'{i},{n}\n' for i, n in enumerate(NAMES)))
    opts = ['DATA.LABEL_LIST', str(tmp / 'labels.csv'), 'DATA.NUM_CLASSES', '0', 'MODEL.NUM_CLASSES', '0',
            'DATA.IMG_SIZE', str(SIZE), 'DATA.INPUT_SIZE', str(SIZE), 'DATA.NUM_FRAMES', str(FRAMES),
            'DATA.DECODER', 'pyav', 'DATA.ROOT', '', 'MODEL.TUBELET_SIZE', '1', 'AUG.FRAME_INTERVAL', '2']
    config = load_config(os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml'), opts)
    assert config.MODEL.NUM_CLASSES == 3   # from the label list
    torch.manual_seed(0)
    model = build_model(config).eval()
    ckpt = tmp / 'ckpt.pth'
    save_checkpoint(ckpt, {'model': model.state_dict(), 'config': config_to_yaml(config), 'epoch': 0})
    return dict(tmp=tmp, videos=videos, config=config, model=model, ckpt=str(ckpt))


def test_windows_are_centred_on_the_stride_grid_inside_the_video():
    # a 10 s video at 30 fps, the released models' window (8 frames x interval 4 = 32 frames), stride 1 s
    starts = W.window_starts(300, 30.0, 32, 1.0)
    assert len(starts) == 10
    # centres at 15, 45, ..., 285 frames; the first and the last moved inside the video
    assert starts.tolist() == [0] + [30 * k - 1 for k in range(1, 9)] + [268]
    times = W.window_times(starts, 300, 30.0, 32)
    assert times[1].tolist() == pytest.approx([29 / 30, 61 / 30]) and times[-1, 1] == pytest.approx(10.0)
    assert len(W.window_starts(301, 30.0, 32, 1.0)) == 11          # a started second gets its window
    assert len(W.window_starts(300, 30.0, 32, 2.5)) == 4
    assert W.window_starts(20, 30.0, 32, 1.0).tolist() == [0]      # shorter than a window: one over all of it
    assert W.window_times(np.array([0]), 20, 30.0, 32).tolist() == [[0.0, 20 / 30]]
    with pytest.raises(ValueError, match='frame rate'):
        W.window_starts(300, 0.0, 32, 1.0)


def test_features_are_the_pre_logits_of_the_same_clip(setup, tmp_path, capsys):
    out = tmp_path / 'features'
    rc = extract_features.main(['--resume', setup['ckpt'], str(setup['videos'] / 'ten.mp4'),
                                str(setup['videos'] / 'short.mp4'), '--out', str(out), '--stride', '1',
                                '--batch', '3', '--workers', '0', '--device', 'cpu'])
    assert rc == 0, capsys.readouterr().err
    model = setup['model']
    features = np.load(out / 'ten.npy')
    meta = json.loads((out / 'ten.json').read_text())
    assert features.dtype == np.float32 and features.shape == (10, model.num_features)   # ten rows for 10 s
    assert meta['windows'] == 10 and meta['duration'] == pytest.approx(10.0) and meta['fps'] == pytest.approx(10.0)
    # window = NUM_FRAMES x FRAME_INTERVAL = 8 frames centred at 0.5 s, 1.5 s, ...: starts 1, 11, ...
    assert meta['start_frame'] == [1 + 10 * k for k in range(10)]
    assert meta['start'][3] == pytest.approx(3.1) and meta['end'][3] == pytest.approx(3.9)
    assert meta['settings']['window_frames'] == 8 and meta['settings']['crop'] == 'center'
    assert meta['settings']['feature_dim'] == model.num_features
    # window 3 by hand: frames 31..38; the segment test rule over 8 frames with interval 2 (segments of
    # (8 - 2 + 1) / 4 = 1.75 frames, int(i * 1.75 + 0.875)) takes offsets 0, 2, 4, 6; the evaluation's centre
    # crop, normalised: forward_head(forward_features(clip), pre_logits=True)
    with open_video(str(setup['videos'] / 'ten.mp4'), 'pyav') as reader:
        frames = reader.get_frames([31, 33, 35, 37])
    clip = EvalTransform(SIZE, 1)(frames_to_tensor(frames))[0]
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(normalize_clip(clip[None])), pre_logits=True)
    np.testing.assert_allclose(features[3], expected[0].numpy(), rtol=1e-5, atol=1e-5)
    short = json.loads((out / 'short.json').read_text())
    assert np.load(out / 'short.npy').shape == (1, model.num_features) and short['end'] == [pytest.approx(0.3)]


def test_full_frame_crop_and_an_unreadable_video_among_others(setup, tmp_path, capsys):
    out = tmp_path / 'features'
    rc = extract_features.main(['--resume', setup['ckpt'], str(setup['videos']), str(tmp_path / 'missing.mp4'),
                                '--out', str(out), '--stride', '2.5', '--crop', 'full', '--workers', '1',
                                '--device', 'cpu'])
    err = capsys.readouterr().err
    assert rc == 4  # unreadable videos (the others were extracted)
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 2 and any('broken.mp4' in e for e in errors) and any('missing.mp4' in e for e in errors)
    assert sorted(p.name for p in out.iterdir()) == ['short.json', 'short.npy', 'ten.json', 'ten.npy',
                                                     'unreadable.txt']
    assert np.load(out / 'ten.npy').shape[0] == 4
    assert len((out / 'unreadable.txt').read_text().splitlines()) == 2
    # the same folder with another stride and crop: refused per video, naming the settings that differ
    rc = extract_features.main(['--resume', setup['ckpt'], str(setup['videos'] / 'ten.mp4'), '--out', str(out),
                                '--stride', '2', '--workers', '0', '--device', 'cpu'])
    err = capsys.readouterr().err
    assert rc == 2
    assert 'ten.json in' in err and 'made with other settings: crop full -> center, stride 2.5 -> 2.0 (pass' in err


def test_ranks_share_the_videos(setup, tmp_path, capsys, monkeypatch):
    """Under torchrun each process takes every WORLD_SIZE-th video (RANK/WORLD_SIZE/LOCAL_RANK as torchrun sets)."""
    assert extract_features.shard(list('abcde'), 1, 2) == ['b', 'd']
    videos = sorted(str(p) for p in setup['videos'].iterdir())   # broken, short, ten
    out = tmp_path / 'features'
    for rank in (0, 1):
        monkeypatch.setenv('RANK', str(rank))
        monkeypatch.setenv('WORLD_SIZE', '2')
        monkeypatch.setenv('LOCAL_RANK', str(rank))
        rc = extract_features.main(['--resume', setup['ckpt'], *videos, '--out', str(out), '--workers', '0',
                                    '--device', 'cpu'])
        assert rc == (4 if rank == 0 else 0)
    assert (out / 'unreadable.rank0.txt').is_file() and 'broken.mp4' in (out / 'unreadable.rank0.txt').read_text()
    assert (out / 'short.npy').is_file() and (out / 'ten.npy').is_file()   # short: rank 1, ten: rank 0


@pytest.mark.slow
def test_resume_after_a_kill_skips_finished_videos(setup, tmp_path):
    videos = tmp_path / 'many'
    videos.mkdir()
    for i in range(6):
        os.link(setup['videos'] / 'ten.mp4', videos / f'v{i}.mp4')
    out = tmp_path / 'features'
    cmd = [sys.executable, '-m', 'tools.extract_features', '--resume', setup['ckpt'], str(videos), '--out', str(out),
           '--batch', '1', '--workers', '0', '--device', 'cpu']
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(out.glob('*.json')) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.stem for p in out.glob('*.json'))
    assert done, 'no video finished before the kill'
    stamps = {stem: (out / f'{stem}.npy').stat().st_mtime_ns for stem in done}
    for stem in done:   # a finished video has both files, complete
        assert np.load(out / f'{stem}.npy').shape == (10, setup['model'].num_features)

    rerun = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f'6 videos: {len(done)} already done, {6 - len(done)} to extract' in rerun.stdout
    assert sorted(p.stem for p in out.glob('*.npy')) == [f'v{i}' for i in range(6)]
    assert {stem: (out / f'{stem}.npy').stat().st_mtime_ns for stem in done} == stamps   # not redone
    assert not [p for p in out.iterdir() if p.name.endswith('.tmp')]

    # other settings into the same folder: refused per video unless --overwrite
    other = subprocess.run(cmd + ['--stride', '2'], cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and other.stderr.count('made with other settings') == 6


def test_timeline_prints_writes_csv_and_png(setup, tmp_path, capsys):
    folder = tmp_path / 'timelines'
    report = tmp_path / 'timeline.json'
    rc = predict.main(['--resume', setup['ckpt'], str(setup['videos'] / 'ten.mp4'), str(setup['videos'] / 'broken.mp4'),
                       '--timeline', '--stride', '2', '--topk', '2', '--timeline-dir', str(folder), '--json',
                       str(report), '--workers', '0', '--device', 'cpu'])
    captured = capsys.readouterr()
    assert rc == 4 and 'broken.mp4' in captured.err
    assert 'ten.mp4 (10.0 s, 5 windows)' in captured.out
    with open(folder / 'ten.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * 2 and {r['rank'] for r in rows} == {'1', '2'}
    assert all(r['name'] == NAMES[int(r['class_id'])] for r in rows)   # names with commas survive the CSV
    # window 2 (centre 5 s: frames 46..53, sampled 46, 48, 50, 52) scored like the model
    model = setup['model']
    with open_video(str(setup['videos'] / 'ten.mp4'), 'pyav') as reader:
        frames = reader.get_frames([46, 48, 50, 52])
    clip = EvalTransform(SIZE, 1)(frames_to_tensor(frames))[0]
    with torch.no_grad():
        probs = model(normalize_clip(clip[None])).softmax(-1)[0]
    top = [r for r in rows if r['start_s'] == '4.6' and r['rank'] == '1'][0]
    assert int(top['class_id']) == int(probs.argmax()) and float(top['probability']) == pytest.approx(
        float(probs.max()), abs=1e-5)
    image = Image.open(folder / 'ten.png')
    assert image.mode == 'RGB' and image.width == 960 and 80 < image.height < 300
    saved = json.loads(report.read_text())
    assert len(saved['timelines'][0]['windows']) == 10 and saved['unreadable'][0]['video'].endswith('broken.mp4')


@pytest.mark.parametrize('case', ['under a file', 'read-only', 'disk full while writing'])
def test_an_output_folder_that_cannot_take_the_features_is_one_line(setup, tmp_path, capsys, monkeypatch, case):
    import errno
    out = tmp_path / 'features'
    argv = ['--resume', setup['ckpt'], str(setup['videos'] / 'short.mp4'), str(setup['videos'] / 'ten.mp4'),
            '--workers', '0', '--device', 'cpu', '--stride', '5']
    if case == 'under a file':
        (tmp_path / 'file').write_text('x')
        out = tmp_path / 'file' / 'features'
        expected = 'a part of the path is a file, not a folder: choose another path (writing the features to --out'
    else:
        # root ignores permission bits: the kernel's answer for a read-only mount or a full disk, simulated
        code = errno.EROFS if case == 'read-only' else errno.ENOSPC
        expected = ('the file system is read-only: choose a writable folder (writing the features to --out'
                    if case == 'read-only' else 'the disk is full (no space left on the device): free space or '
                    'choose a folder on another disk (writing the features to --out')
        real_fsync, calls = os.fsync, []
        if case == 'read-only':
            import tempfile

            def refused(*args, **kwargs):   # what creating the first file in a read-only folder gives
                raise OSError(code, os.strerror(code), str(out / '.write-check'))
            monkeypatch.setattr(tempfile, 'NamedTemporaryFile', refused)
        else:
            def fsync_failing_on_the_third(fd):   # short.npy, short.json, then ten.npy: the disk is full
                if stat.S_ISREG(os.fstat(fd).st_mode):   # files, not the folder fsynced after each rename
                    calls.append(fd)
                if len(calls) == 3:
                    raise OSError(code, os.strerror(code))
                real_fsync(fd)
            monkeypatch.setattr(os, 'fsync', fsync_failing_on_the_third)
    rc = extract_features.main([*argv, '--out', str(out)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if 'Traceback' in line or line.startswith('error:')]
    assert rc == 2 and len(errors) == 1 and expected in errors[0], err
    if case == 'disk full while writing':
        assert '1 video(s) finished before are kept' in errors[0]
        assert sorted(p.name for p in out.iterdir()) == ['short.json', 'short.npy']   # no partial ten.*, no temp
