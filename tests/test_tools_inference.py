"""tools/predict.py and tools/visualize.py on tiny encoded videos with a random tiny checkpoint."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_eval_loader, normalize_clip, write_video
from models import build_model
from tools import predict, visualize
from engine.checkpoint import save_checkpoint
from engine.config import config_to_yaml, load_config

# SSv2-style names: commas inside names
NAMES = ['Pushing something from left to right', 'Moving something up, then down', 'Holding something',
         'Tearing something, just a little bit', 'Dropping something']
FRAMES, SIZE = 4, 32


def _opts(tmp, **extra):
    opts = {'DATA.LABEL_LIST': str(tmp / 'labels.csv'), 'DATA.NUM_CLASSES': len(NAMES),
            'MODEL.NUM_CLASSES': len(NAMES), 'DATA.IMG_SIZE': SIZE, 'DATA.INPUT_SIZE': SIZE,
            'DATA.NUM_FRAMES': FRAMES, 'DATA.DECODER': 'pyav', 'DATA.NUM_WORKERS': 0, 'DATA.ROOT': '',
            'DATA.VAL_FILE': str(tmp / 'val.csv'), 'OUTPUT': str(tmp / 'out'), 'TEST.FINAL_NUM_CLIP': 2,
            'TEST.FINAL_NUM_CROP': 3,
            # the architecture these tests assume, whatever recipe the toy config ships
            'MODEL.TUBELET_SIZE': 1, 'MODEL.FOCAL.MLP_RATIO': 4.0, **extra}
    return [str(x) for kv in opts.items() for x in kv]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def setup(tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp('tools')
    rng = np.random.default_rng(0)
    videos = tmp / 'videos'
    os.makedirs(videos / 'sub')
    # moving bright square on noise, 12 frames, 48x64 (not square: crops matter)
    for i, name in enumerate(['a.mp4', 'sub/b.webm', 'c.mp4']):
        frames = rng.integers(0, 80, (12, 48, 64, 3), dtype=np.uint8)
        for t in range(12):
            frames[t, 10:26, 4 * t + i:4 * t + i + 16] = 255
        write_video(str(videos / name), frames, fps=10, codec='libvpx-vp9' if name.endswith('webm') else 'libx264')
    (videos / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')
    (videos / 'notes.txt').write_text('not a video')
    (tmp / 'labels.csv').write_text('id,name\n' + ''.join(f'{i},{n}\n' for i, n in enumerate(NAMES)))
    (tmp / 'val.csv').write_text(f"{videos / 'a.mp4'},0\n{videos / 'c.mp4'},2\n")
    config = load_config('configs/toy/video-focalnet_toy.yaml', _opts(tmp))
    torch.manual_seed(0)
    model = build_model(config).eval()
    ckpt = tmp / 'ckpt.pth'
    save_checkpoint(ckpt, {'model': model.state_dict(), 'config': config_to_yaml(config), 'epoch': 0})
    return dict(tmp=tmp, videos=videos, config=config, model=model, ckpt=str(ckpt))


def test_predict_names_json_and_unreadable(setup, capsys):
    tmp, videos = setup['tmp'], setup['videos']
    out = tmp / 'pred.json'
    rc = predict.main(['--resume', setup['ckpt'], str(videos), str(tmp / 'missing.mp4'), '--topk', '3',
                       '--views', '2x3', '--json', str(out), '--workers', '0', '--device', 'cpu'])
    captured = capsys.readouterr()
    assert rc == 4  # some videos failed (EXIT_UNREADABLE)
    errors = [line for line in captured.err.splitlines() if line.startswith('error:')]
    assert len(errors) == 2 and any('broken.mp4' in e for e in errors) and any('missing.mp4' in e for e in errors)
    result = json.loads(out.read_text())
    assert [os.path.relpath(p['video'], videos) for p in result['predictions']] == ['a.mp4', 'c.mp4', 'sub/b.webm']
    assert sorted(os.path.basename(u['video']) for u in result['unreadable']) == ['broken.mp4', 'missing.mp4']
    for pred in result['predictions']:
        top = pred['top']
        assert len(top) == 3 and all(p['name'] == NAMES[p['class_id']] for p in top)
        probs = [p['probability'] for p in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert f"{top[0]['probability']:7.2%}  {top[0]['name']}" in captured.out
    assert 'Moving something up, then down' in captured.out


def _named_training_checkpoint(setup, name):
    """A checkpoint made as training makes them (engine.checkpoint.make_checkpoint), with the label list
    present; the list is removed afterwards, as on the machine of someone who got only the file."""
    import shutil

    from engine.checkpoint import make_checkpoint
    from engine.checkpoint.schema import KEYS
    tmp = setup['tmp']
    labels = tmp / f'{name}_labels.csv'
    shutil.copy(tmp / 'labels.csv', labels)
    config = load_config('configs/toy/video-focalnet_toy.yaml', _opts(tmp, **{'DATA.LABEL_LIST': str(labels)}))
    entries = {k: None for k in KEYS if k != 'class_names'}
    entries.update(model=setup['model'].state_dict(), config=config_to_yaml(config))
    state = make_checkpoint(**entries)
    assert state['class_names'] == NAMES
    path = tmp / f'{name}.pth'
    save_checkpoint(path, state)
    os.remove(labels)
    return str(path)


def test_predict_names_from_the_checkpoint_without_label_list(setup, capsys):
    ckpt = _named_training_checkpoint(setup, 'named')
    rc = predict.main(['--resume', ckpt, str(setup['videos'] / 'a.mp4'), '--views', '1x1', '--topk', '5',
                       '--workers', '0', '--device', 'cpu'])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    shown = [line.split('%', 1)[1].strip() for line in captured.out.splitlines()[1:]]
    assert sorted(shown) == sorted(NAMES) and 'class ' not in captured.out
    # an explicit label list still wins over the stored names
    other = setup['tmp'] / 'other_labels.csv'
    other.write_text('id,name\n' + ''.join(f'{i},other {i}\n' for i in range(len(NAMES))))
    assert predict.main(['--resume', ckpt, str(setup['videos'] / 'a.mp4'), '--views', '1x1', '--topk', '1',
                         '--workers', '0', '--device', 'cpu', '--opts', 'DATA.LABEL_LIST', str(other)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split('%', 1)[1].strip().startswith('other ')


def test_visualize_names_from_the_checkpoint(setup, capsys):
    ckpt = _named_training_checkpoint(setup, 'named_vis')
    rc = visualize.main([str(setup['videos'] / 'a.mp4'), '--resume', ckpt, '--out', str(setup['tmp'] / 'vis3'),
                         '--stage', '0', '--cell', '32', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith('predicted: ')
    assert out.splitlines()[0][len('predicted: '):].rsplit(' (', 1)[0] in NAMES


def test_predict_matches_evaluation_pipeline(setup):
    """Same decode, views and score rule as main.py's evaluation of the same files."""
    config, model = setup['config'], setup['model']
    paths = [str(setup['videos'] / 'a.mp4'), str(setup['videos'] / 'c.mp4')]
    preds, unreadable = predict.predict(model, config, paths, num_clip=2, num_crop=3, topk=5)
    assert not unreadable
    _, loader = build_eval_loader(config, num_clip=2, num_crop=3)
    with torch.no_grad():
        for batch in loader:
            for imgs, index in zip(batch['imgs'], batch['index']):
                probs = model(normalize_clip(imgs)).softmax(-1).mean(0)  # (V, K) -> (K,)
                got = {p['class_id']: p['probability'] for p in preds[int(index)]['top']}
                assert got == pytest.approx({c: float(probs[c]) for c in range(len(NAMES))}, abs=1e-5)


def test_predict_original_format_checkpoint_without_cfg(setup, capsys):
    """The original's files pickle the yacs config and the model under 'model' (+ optimizer state)."""
    path = setup['tmp'] / 'original.pth'
    torch.save({'model': setup['model'].state_dict(), 'config': setup['config'].clone(), 'optimizer': {},
                'lr_scheduler': {}, 'max_accuracy': 0.0, 'epoch': 3}, path)
    rc = predict.main(['--resume', str(path), str(setup['videos'] / 'a.mp4'), '--views', '1x1', '--topk', '1',
                       '--workers', '0'])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out[0].endswith('a.mp4') and out[1].split('%', 1)[1].strip() in NAMES


def test_predict_checkpoint_mismatch_names_keys(setup, capsys):
    tmp = setup['tmp']
    rc = predict.main(['--cfg', 'configs/toy/video-focalnet_toy.yaml', '--resume', setup['ckpt'],
                       str(setup['videos'] / 'a.mp4'), '--workers', '0', '--opts'] + _opts(tmp, **{
                           'MODEL.FOCAL.EMBED_DIM': 24}))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert 'patch_embed.proj.weight: checkpoint [16, 3, 4, 4] vs model [24, 3, 4, 4]' in err[0]


def test_visualize_png_and_gif(setup, capsys):
    out = setup['tmp'] / 'vis'
    rc = visualize.main([str(setup['videos'] / 'a.mp4'), '--resume', setup['ckpt'], '--out', str(out),
                         '--stage', '0', '--cell', '64', '--device', 'cpu'])
    assert rc == 0, capsys.readouterr().err
    png = Image.open(out / 'a_modulators.png')
    png.load()
    gif = Image.open(out / 'a_modulators.gif')
    assert png.format == 'PNG' and gif.format == 'GIF' and gif.n_frames == FRAMES
    # FRAMES rows and 3 columns of 64-px cells, plus labels
    assert 3 * 64 < png.width < 3 * 64 + 150 and FRAMES * 64 < png.height < FRAMES * 64 + 120
    arr = np.asarray(png.convert('RGB')).astype(float)
    assert arr.std() > 20
    gif.seek(FRAMES - 1)
    assert np.asarray(gif.convert('RGB')).std() > 20
    # --palette: the same picture with 256 colours (for documentation), smaller
    size = os.path.getsize(out / 'a_modulators.png')
    assert visualize.main([str(setup['videos'] / 'a.mp4'), '--resume', setup['ckpt'], '--out', str(out),
                           '--stage', '0', '--cell', '64', '--device', 'cpu', '--palette']) == 0
    small = Image.open(out / 'a_modulators.png')
    assert small.mode == 'P' and small.size == png.size and os.path.getsize(out / 'a_modulators.png') < size
    # heat-map columns differ from the input column: the maps are drawn
    cells = visualize.visualize(setup['model'], _first_view(setup), stage=0, block=-1)
    assert cells['key'] == 'layers.0.blocks.0'
    assert cells['spatial'].shape == (FRAMES, SIZE // 4, SIZE // 4)
    assert cells['spatial'].std() > 0 and cells['temporal'].std() > 0
    assert cells['spatial'].min() >= 0 and cells['spatial'].max() <= 1


def _first_view(setup):
    from tools import _common
    dataset = _common.eval_dataset(setup['config'], [str(setup['videos'] / 'a.mp4')], 1, 1)
    return dataset[0]['imgs'][0]


def test_visualize_bad_block_is_one_line(setup, capsys):
    rc = visualize.main([str(setup['videos'] / 'a.mp4'), '--resume', setup['ckpt'], '--out',
                         str(setup['tmp'] / 'vis2'), '--stage', '0', '--block', '5', '--device', 'cpu'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ['error: --block 5: stage 0 has blocks 0..0']
