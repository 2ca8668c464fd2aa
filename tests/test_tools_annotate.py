"""tools.predict --timeline --annotate OUT.mp4: the video comes back with the current window's top classes and
probabilities drawn on every frame."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from engine_helpers import REPO
from tools import annotate, predict

NAMES = ['moving left', 'moving right', 'growing', 'shrinking']

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def setup(tmp_path_factory, one_torch_thread):
    from datasets import write_video
    from engine.checkpoint import save_checkpoint
    from engine.config import config_to_yaml, load_config
    from models import build_model

    tmp = tmp_path_factory.mktemp('annotate')
    (tmp / 'labels.csv').write_text('id,name\n' + ''.join(f'{i},{n}\n' for i, n in enumerate(NAMES)))
    opts = ['DATA.NUM_CLASSES', '4', 'MODEL.NUM_CLASSES', '4', 'DATA.LABEL_LIST', str(tmp / 'labels.csv'),
            'DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'MODEL.FOCAL.EMBED_DIM', '8',
            'MODEL.FOCAL.DEPTHS', '[1, 1, 1, 1]', 'AUG.FRAME_INTERVAL', '2']
    config = load_config(os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml'), opts)
    torch.manual_seed(0)
    ckpt = tmp / 'model.pth'
    save_checkpoint(ckpt, {'model': build_model(config).state_dict(), 'config': config_to_yaml(config)})
    # a camera-like clip made with PyAV: a bright block moving right over grain, 4 s at 10 fps, H.264
    rng = np.random.default_rng(0)
    frames = rng.integers(40, 90, (40, 120, 160, 3), dtype=np.uint8)
    for t in range(40):
        frames[t, 70:100, 3 * t:3 * t + 30] = (230, 200, 60)
    video = str(tmp / 'walk.mp4')
    write_video(video, frames, fps=10)
    return dict(tmp=tmp, ckpt=str(ckpt), video=video, frames=frames)


def test_current_window_is_the_one_centred_nearest():
    times = np.array([[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]])   # centres 0.5, 1.0, 1.5
    assert annotate.current_windows(np.array([0.0, 0.7, 0.8, 1.2, 1.3, 9.0]), times).tolist() == [0, 0, 1, 1, 2, 2]


def test_annotated_video_shows_each_windows_top_classes(setup, capsys):
    out = setup['tmp'] / 'annotated.mp4'
    report = setup['tmp'] / 'timeline.json'
    rc = predict.main(['--resume', setup['ckpt'], setup['video'], '--timeline', '--stride', '1', '--topk', '3',
                       '--annotate', str(out), '--json', str(report), '--timeline-dir', str(setup['tmp'] / 'tl'),
                       '--workers', '0', '--device', 'cpu'])
    assert rc == 0
    assert f"{out} (40 frames with the current window's top 3)" in capsys.readouterr().out
    windows = json.loads(report.read_text())['timelines'][0]['windows']
    spans = sorted({(w['start'], w['end']) for w in windows})
    assert len(spans) >= 3

    import av
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
    assert len(decoded) == len(setup['frames']) and decoded[0].shape == setup['frames'][0].shape
    # each frame is the source frame with its window's lines drawn on it: redraw them from the JSON the same
    # run wrote (the classes and probabilities it reports) and compare, allowing for H.264's loss
    times = np.array(spans)
    for index in (0, 15, 39):
        span = tuple(times[annotate.current_windows(np.array([index / 10]), times)[0]])
        lines = [(w['name'], w['probability']) for w in sorted(windows, key=lambda w: w['rank'])
                 if (w['start'], w['end']) == span]
        assert [name for name, _ in lines][:1] and all(name in NAMES for name, _ in lines)
        got = decoded[index].astype(np.float32)[:60, :120]   # the corner the lines are drawn in

        def error(drawn):
            redrawn = annotate.draw_overlay(Image.fromarray(setup['frames'][index]), drawn, *span)
            return np.abs(got - np.asarray(redrawn, dtype=np.float32)[:60, :120]).mean()

        other = [(NAMES[(NAMES.index(name) + 1) % len(NAMES)], 1 - p) for name, p in lines]
        assert error(lines) < 8 and error(lines) < error(other) - 2, index
        # ... and not the bare frame: the overlay is there
        assert np.abs(got - setup['frames'][index][:60, :120]).mean() > 20


def test_annotate_needs_the_timeline_and_one_video(setup, capsys):
    out = str(setup['tmp'] / 'never.mp4')
    assert predict.main(['--resume', setup['ckpt'], setup['video'], '--annotate', out, '--device', 'cpu']) == 2
    assert 'add --timeline' in capsys.readouterr().err
    assert predict.main(['--resume', setup['ckpt'], setup['video'], setup['video'], '--timeline', '--annotate', out,
                         '--device', 'cpu']) == 2
    assert 'annotates one video, got 2' in capsys.readouterr().err
    assert not os.path.exists(out)
