"""Hostile inputs end in one line naming the file and the problem, never in a traceback or a wrong result:
videos shorter than the clip, crafted checkpoints (wrong safetensors headers, an epoch stored as text, a zip whose
CRC fails, non-finite weights, a stored config that disagrees with --cfg)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from datasets import write_video
from engine.checkpoint import save_checkpoint
from engine.config import config_to_yaml, load_config
from engine_helpers import REPO, TOY_CFG, env
from tools import predict
from video_helpers import stamped_frames


def _opts(tmp, **extra):
    opts = {'DATA.DATASET': 'hostile', 'DATA.ROOT': '', 'DATA.VAL_FILE': str(tmp / 'val.csv'),
            'DATA.LABEL_LIST': '', 'DATA.NUM_FRAMES': 4, 'DATA.IMG_SIZE': 32, 'DATA.INPUT_SIZE': 32,
            'DATA.NUM_WORKERS': 0, 'DATA.DECODER': 'pyav', 'MODEL.FOCAL.EMBED_DIM': 8,
            'MODEL.FOCAL.DEPTHS': '[1,1,1,1]', 'MODEL.TUBELET_SIZE': 1, 'TEST.NUM_CLIP': 2, 'TEST.NUM_CROP': 1,
            'TEST.FINAL_NUM_CLIP': 2, 'TEST.FINAL_NUM_CROP': 1, 'TEST.BATCH_SIZE': 2,
            'TEST.ON_UNREADABLE': 'error', 'TENSORBOARD': False, **extra}
    return [str(x) for kv in opts.items() for x in kv]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A 1-frame and a 3-frame video (clips of 4 frames, 2 clips), VAL_FILE listing both, a tiny checkpoint."""
    tmp = tmp_path_factory.mktemp('hostile')
    for n in (1, 3):
        write_video(str(tmp / f'v{n}.mp4'), stamped_frames(n, 32, 32), fps=10)
    (tmp / 'val.csv').write_text(f"{tmp / 'v1.mp4'},0\n{tmp / 'v3.mp4'},1\n")
    config = load_config(TOY_CFG, _opts(tmp), output=str(tmp / 'out'))
    from models import build_model
    torch.manual_seed(0)
    model = build_model(config).eval()
    ckpt = tmp / 'ckpt.pth'
    save_checkpoint(ckpt, {'model': model.state_dict(), 'config': config_to_yaml(config), 'epoch': 0})
    return dict(tmp=tmp, config=config, model=model, ckpt=str(ckpt))


def _main(args, timeout=240):
    return subprocess.run([sys.executable, 'main.py'] + args, cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------------------------- short videos

def test_predict_on_videos_shorter_than_the_clip(setup, capsys):
    tmp = setup['tmp']
    rc = predict.main(['--resume', setup['ckpt'], str(tmp / 'v1.mp4'), str(tmp / 'v3.mp4'), '--views', '2x1',
                       '--workers', '0', '--device', 'cpu', '--topk', '1'])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert 'error' not in captured.err and captured.out.count('%') == 2


@pytest.mark.slow
def test_evaluation_of_videos_shorter_than_the_clip(setup):
    """main.py --eval with a 1-frame and a 3-frame video in VAL_FILE, 2 clips each, unreadable = error."""
    tmp = setup['tmp']
    proc = _main(['--cfg', TOY_CFG, '--eval', '--resume', setup['ckpt'], '--output', str(tmp / 'out'),
                  '--opts', *_opts(tmp)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr


# ------------------------------------------------------------------------------------------- config ranges

@pytest.mark.parametrize('args,named', [
    (['--opts', 'DATA.BATCH_SIZE', '0'], 'DATA.BATCH_SIZE (--batch-size): expected an integer >= 1, got 0'),
    (['--opts', 'DATA.BATCH_SIZE', '-2'], 'DATA.BATCH_SIZE (--batch-size): expected an integer >= 1, got -2'),
    (['--batch-size', '0'], 'DATA.BATCH_SIZE (--batch-size): expected an integer >= 1, got 0'),
    (['--opts', 'DATA.NUM_FRAMES', '0'], 'DATA.NUM_FRAMES: expected an integer >= 1, got 0'),
    (['--opts', 'DATA.NUM_FRAMES', '-2'], 'DATA.NUM_FRAMES: expected an integer >= 1, got -2'),
    (['--opts', 'DATA.INPUT_SIZE', '0'], 'DATA.INPUT_SIZE: expected an integer >= 1, got 0'),
    (['--opts', 'TEST.NUM_CLIP', '0'], 'TEST.NUM_CLIP: expected an integer >= 1, got 0'),
    (['--opts', 'DATA.NUM_WORKERS', '-1'], 'DATA.NUM_WORKERS: expected an integer >= 0, got -1'),
    (['--opts', 'DATA.MAX_UNREADABLE_FRACTION', '2.0'],
     'DATA.MAX_UNREADABLE_FRACTION: expected a fraction in [0.0, 1.0], got 2.0'),
    (['--opts', 'TRAIN.EPOCHS', '0'], 'TRAIN.EPOCHS: expected an integer >= 1, got 0'),
    (['--opts', 'PRINT_FREQ', '0'], 'PRINT_FREQ: expected an integer >= 1, got 0'),
    (['--opts', 'TRAIN.ACCUMULATION_STEPS', '-1'],
     'TRAIN.ACCUMULATION_STEPS (--accumulation-steps): expected an integer >= 0, got -1'),
    (['--opts', 'DATA.IMG_SIZE', '0'], 'DATA.IMG_SIZE: expected an integer >= 1, got 0'),
    (['--opts', 'TEST.FINAL_NUM_CLIP', '0'], 'TEST.FINAL_NUM_CLIP: expected an integer >= 1, got 0'),
    (['--opts', 'TEST.NUM_CROP', '0'], 'TEST.NUM_CROP: expected one of [1, 3], got 0'),
    (['--opts', 'MODEL.FOCAL.DEPTHS', '[1,0,1,1]'], 'MODEL.FOCAL.DEPTHS: expected a list of integers >= 1'),
])
def test_config_values_out_of_range_are_one_line_exit_2(args, named, capsys, tmp_path):
    import main
    # --eval of a missing file and no toy data generation: without the check the run stops at once (differently)
    safe = ['--eval', '--resume', str(tmp_path / 'none.pth'), '--opts', 'DATA.DATASET', 'hostile']
    assert main.main(['--cfg', TOY_CFG, '--output', str(tmp_path)] + safe + args) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and named in err and 'Traceback' not in err, err
    assert not os.listdir(tmp_path)  # nothing written into the run folder


# ------------------------------------------------------------------------------------------- annotation files

def _annotation_error(path, **kwargs):
    from datasets.annotations import AnnotationError, read_annotations
    with pytest.raises(AnnotationError) as info:
        read_annotations(str(path), **kwargs)
    message = str(info.value)
    assert '\n' not in message
    return message


@pytest.mark.parametrize('encoding,named', [
    ('latin-1', r'val\.csv:2: byte 0xe9 at column 4 is not UTF-8'),
    ('utf-16', r'val\.csv:1: UTF-16 text \(byte-order mark fffe\)'),
    ('utf-16-le', r'val\.csv:1: NUL bytes'),
])
def test_annotation_files_in_other_encodings_are_one_line(tmp_path, encoding, named):
    path = tmp_path / 'val.csv'
    path.write_bytes('a.mp4,0\ncaf\u00e9.mp4,1\n'.encode(encoding))
    message = _annotation_error(path)
    assert re.search(named, message) and 'read as UTF-8 (with or without BOM)' in message, message


def test_utf8_with_and_without_bom_reads_the_same(tmp_path):
    from datasets.annotations import read_annotations, read_label_list
    text = 'path,label\ncaf\u00e9.mp4,1\nb.mp4,0\n'
    for name, data in (('plain.csv', text.encode('utf-8')), ('bom.csv', text.encode('utf-8-sig'))):
        (tmp_path / name).write_bytes(data)
        assert read_annotations(str(tmp_path / name)) == [('caf\u00e9.mp4', 1), ('b.mp4', 0)]
    (tmp_path / 'labels.csv').write_bytes('id,name\n0,caf\u00e9\n'.encode('utf-8-sig'))
    assert read_label_list(str(tmp_path / 'labels.csv')) == ['caf\u00e9']
    (tmp_path / 'labels.csv').write_bytes('id,name\n0,caf\u00e9\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'labels\.csv:2: byte 0xe9'):
        read_label_list(str(tmp_path / 'labels.csv'))


def test_json_record_with_a_numeric_filename_names_its_line(tmp_path):
    path = tmp_path / 'val.json'
    path.write_text('[\n  {"filename": "a.mp4", "label": 0},\n  {"filename": 17, "label": 1}\n]\n')
    message = _annotation_error(path)
    assert 'val.json:3: record 1: expected' in message and "'filename': 17" in message, message
    path.write_text('[{"filename": "a.mp4", "label": true}]')
    assert 'val.json:1: record 0' in _annotation_error(path)


def test_duplicate_rows_error_in_evaluation_warn_in_training(tmp_path, caplog):
    from datasets.annotations import read_annotations
    path = tmp_path / 'list.csv'
    path.write_text(''.join(f'v{i % 4}.mp4,{i % 4}\n' for i in range(8)))  # 4 videos, each twice
    message = _annotation_error(path)
    assert "list.csv:5: 'v0.mp4' is listed again (first at line 1); 4 duplicate row(s)" in message, message
    with caplog.at_level('WARNING', logger='datasets.annotations'):
        rows = read_annotations(str(path), duplicates='warn')
    assert len(rows) == 8 and '4 row(s) repeat a video listed earlier' in caplog.text


@pytest.mark.slow
def test_duplicate_evaluation_rows_stop_main_eval_in_one_line(setup):
    tmp = setup['tmp']
    (tmp / 'dup.csv').write_text(f"{tmp / 'v3.mp4'},0\n{tmp / 'v3.mp4'},0\n")
    proc = _main(['--cfg', TOY_CFG, '--eval', '--resume', setup['ckpt'], '--output', str(tmp / 'out_dup'),
                  '--opts', *_opts(tmp, **{'DATA.VAL_FILE': str(tmp / 'dup.csv')})])
    assert proc.returncode == 2 and 'dup.csv:2' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
