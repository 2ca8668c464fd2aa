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
    (['--opts', 'DATA.NUM_FRAMES', '0'], 'DATA.NUM_FRAMES: expected an integer in [1, 1024], got 0'),
    (['--opts', 'DATA.NUM_FRAMES', '-2'], 'DATA.NUM_FRAMES: expected an integer in [1, 1024], got -2'),
    (['--opts', 'DATA.INPUT_SIZE', '0'], 'DATA.INPUT_SIZE: expected an integer in [1, 1024], got 0'),
    (['--opts', 'TEST.NUM_CLIP', '0'], 'TEST.NUM_CLIP: expected an integer >= 1, got 0'),
    (['--opts', 'DATA.NUM_WORKERS', '-1'], 'DATA.NUM_WORKERS: expected an integer >= 0, got -1'),
    (['--opts', 'DATA.MAX_UNREADABLE_FRACTION', '2.0'],
     'DATA.MAX_UNREADABLE_FRACTION: expected a fraction in [0.0, 1.0], got 2.0'),
    (['--opts', 'TRAIN.EPOCHS', '0'], 'TRAIN.EPOCHS: expected an integer >= 1, got 0'),
    (['--opts', 'PRINT_FREQ', '0'], 'PRINT_FREQ: expected an integer >= 1, got 0'),
    (['--opts', 'TRAIN.ACCUMULATION_STEPS', '-1'],
     'TRAIN.ACCUMULATION_STEPS (--accumulation-steps): expected an integer >= 0, got -1'),
    (['--opts', 'DATA.IMG_SIZE', '0'], 'DATA.IMG_SIZE: expected an integer in [1, 1024], got 0'),
    (['--opts', 'TEST.FINAL_NUM_CLIP', '0'], 'TEST.FINAL_NUM_CLIP: expected an integer >= 1, got 0'),
    (['--opts', 'TEST.NUM_CROP', '0'], 'TEST.NUM_CROP: expected one of [1, 3], got 0'),
    (['--opts', 'MODEL.FOCAL.DEPTHS', '[1,0,1,1]'], 'MODEL.FOCAL.DEPTHS: expected a list of integers >= 1'),
    # a modulation without a level was a ValueError traceback from the model; sizes and seeds without a bound
    # allocated hundreds of GB or failed in numpy's seeding
    (['--opts', 'MODEL.FOCAL.FOCAL_LEVELS', '[0,0,0,0]'], 'MODEL.FOCAL.FOCAL_LEVELS: expected a list of integers >= 1'),
    (['--opts', 'MODEL.FOCAL.FOCAL_LEVELS', '[2,2]'], 'MODEL.FOCAL.FOCAL_LEVELS: expected one value per stage (4'),
    (['--opts', 'DATA.INPUT_SIZE', '100000'], 'DATA.INPUT_SIZE: expected an integer in [1, 1024], got 100000'),
    (['--seed', '99999999999999999999'],
     'SEED (--seed): expected an integer in [0, 2147483647], got 99999999999999999999'),
    # typos and types in the user's words
    (['--opts', 'TRAIN.EPOCH', '3'], 'unknown config key TRAIN.EPOCH; did you mean TRAIN.EPOCHS'),
    (['--opts', 'DATA.EPOCHS', '3'], 'unknown config key DATA.EPOCHS; did you mean TRAIN.EPOCHS?'),
    (['--opts', 'TRAIN.EPOCHS', 'three'], "TRAIN.EPOCHS expects an integer, got 'three'"),
    (['--opts', 'TRAIN.WEIGHT_DECAY', 'lots'], "TRAIN.WEIGHT_DECAY expects a number, got 'lots'"),
])
def test_config_values_out_of_range_are_one_line_exit_2(args, named, capsys, tmp_path):
    import main
    # --eval of a missing file and no toy data generation: without the check the run stops at once (differently)
    safe = ['--eval', '--resume', str(tmp_path / 'none.pth'), '--opts', 'DATA.DATASET', 'hostile']
    assert main.main(['--cfg', TOY_CFG, '--output', str(tmp_path)] + safe + args) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and named in err and 'Traceback' not in err, err
    assert not os.listdir(tmp_path)  # nothing written into the run folder


@pytest.mark.parametrize('text,named', [
    ('BASE: 5\n', 'BASE: expected a config file name or a list of them'),
    ("BASE: [['x']]\n", 'BASE: expected a config file name or a list of them'),
    ('TRAIN:\n  EPOCH: 3\n', 'unknown config key TRAIN.EPOCH; did you mean TRAIN.EPOCHS'),
    ('TRAIN:\n  EPOCHS: three\n', "TRAIN.EPOCHS expects an integer, got 'three'"),
    ('TRAIN:\n  EPOCHS: 3\n   BASE_LR: 0.1\n', 'bad.yaml:3:'),  # a YAML syntax error: file:line
    ('DATA: [1, 2\n', 'bad.yaml:2:'),
])
def test_config_file_errors_are_one_line_exit_2(text, named, capsys, tmp_path):
    import main
    (tmp_path / 'bad.yaml').write_text(text)
    assert main.main(['--cfg', str(tmp_path / 'bad.yaml'), '--output', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and named in err and 'Traceback' not in err, err
    assert not os.path.exists(tmp_path / 'out')


def test_an_integer_for_a_float_key_is_the_number_meant(tmp_path):
    """yacs refused TRAIN.WEIGHT_DECAY 0 as a type mismatch (int vs. float)."""
    assert load_config(TOY_CFG, ['TRAIN.WEIGHT_DECAY', '0']).TRAIN.WEIGHT_DECAY == 0.0
    (tmp_path / 'c.yaml').write_text('TRAIN:\n  WEIGHT_DECAY: 1\n  EPOCHS: 3\n')
    config = load_config(str(tmp_path / 'c.yaml'))
    assert isinstance(config.TRAIN.WEIGHT_DECAY, float) and config.TRAIN.WEIGHT_DECAY == 1.0
    assert config.TRAIN.EPOCHS == 3


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


# ------------------------------------------------------------------------------------------- crafted checkpoints

def _write_safetensors(path, header, data=b''):
    import json
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, 'little') + raw + data)
    return str(path)


def _checkpoint_error(path, **kwargs):
    from engine.checkpoint import CheckpointError, load_checkpoint_file
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path, **kwargs)
    message = str(info.value)
    assert '\n' not in message and str(path) in message, message
    return message


@pytest.mark.parametrize('header,named', [
    ({'w': {'dtype': 'F32', 'shape': [3, 3], 'data_offsets': [0, 16]}}, 'shape [3, 3] of F32 needs 36 bytes'),
    ({'w': {'dtype': 'F32', 'shape': [2, 2]}}, 'data_offsets None, expected [start, end]'),
    ({'w': {'dtype': 'F32', 'shape': [2, 2], 'data_offsets': [0, 64]}}, 'lie outside the 16 data bytes'),
    ({'w': {'dtype': 'F32', 'shape': 'x', 'data_offsets': [0, 16]}}, "shape 'x', expected a list"),
    ({'w': 7}, 'header entry is a int'),
])
def test_crafted_safetensors_headers_are_one_line(tmp_path, header, named):
    path = _write_safetensors(tmp_path / 'w.safetensors', header, bytes(16))
    assert named in _checkpoint_error(path)


def test_crafted_safetensors_as_last_pth_is_passed_over_by_auto_resume(tmp_path, caplog):
    from engine.resume import find_auto_resume
    _write_safetensors(tmp_path / 'last.pth', {'w': {'dtype': 'F32', 'shape': [2, 2]}}, bytes(16))
    torch.save({'model': {'w': torch.zeros(2)}, 'epoch': 0}, tmp_path / 'ckpt_epoch_0.pth')
    with caplog.at_level('WARNING'):
        assert find_auto_resume(str(tmp_path)) == str(tmp_path / 'ckpt_epoch_0.pth')
    assert 'data_offsets' in caplog.text


def test_epoch_stored_as_text_is_refused(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': {'w': torch.zeros(2)}, 'epoch': '3'}, path)
    assert "entry 'epoch' is '3' (str), expected an integer" in _checkpoint_error(path)
    torch.save({'model': {'w': torch.zeros(2)}, 'epoch': 3, 'max_accuracy': float('nan')}, path)
    assert "entry 'max_accuracy' is nan" in _checkpoint_error(path)
    torch.save({'model': {'w': torch.zeros(2)}, 'epoch': np.int64(3), 'max_accuracy': np.float64(1.5)}, path)
    from engine.checkpoint import load_checkpoint_file
    assert load_checkpoint_file(path)['epoch'] == 3  # numpy scalars (the original's files) still load


def _flip_a_weight_bit(src, dst):
    """Flip one bit inside the data record of the first tensor of a zip checkpoint (its CRC no longer matches)."""
    import zipfile
    data = bytearray(open(src, 'rb').read())
    with zipfile.ZipFile(src) as archive:
        member = next(m for m in archive.infolist() if '/data/' in m.filename)
    # the local header: 30 bytes + name + extra field, then the (stored, uncompressed) data
    name_len = int.from_bytes(data[member.header_offset + 26:member.header_offset + 28], 'little')
    extra_len = int.from_bytes(data[member.header_offset + 28:member.header_offset + 30], 'little')
    start = member.header_offset + 30 + name_len + extra_len
    data[start + 5] ^= 0x10
    open(dst, 'wb').write(bytes(data))
    return member.filename


def test_bit_flipped_zip_checkpoint_is_refused(setup, tmp_path):
    flipped = tmp_path / 'flipped.pth'
    member = _flip_a_weight_bit(setup['ckpt'], flipped)
    torch.load(flipped, weights_only=True)  # torch.load itself does not notice
    message = _checkpoint_error(flipped)
    assert 'CRC-32 of member' in message and member in message, message
    assert 'CRC' in _checkpoint_error(flipped, mmap=True)  # auto-resume's cheap check sees it too


def test_non_finite_weights_are_refused_unless_allowed(setup, tmp_path, capsys):
    state = {k: v.clone() for k, v in setup['model'].state_dict().items()}
    state['head.weight'][0, 0] = float('nan')
    state['head.bias'][1] = float('inf')
    bad = tmp_path / 'nan.pth'
    save_checkpoint(bad, {'model': state, 'config': config_to_yaml(setup['config']), 'epoch': 0})
    video = str(setup['tmp'] / 'v3.mp4')
    args = ['--resume', str(bad), video, '--views', '1x1', '--workers', '0', '--device', 'cpu']
    assert predict.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '2 weight tensor(s) hold NaN or inf' in err[0] and 'head.weight (1 of' in err[0], err
    assert str(bad) in err[0] and '--allow-non-finite' in err[0]
    assert predict.main(args + ['--allow-non-finite']) == 0
    capsys.readouterr()
    assert predict.main(args) == 2  # the flag does not outlive its command


def test_stored_config_disagreeing_with_cfg_is_listed_key_by_key(setup, tmp_path, capsys, caplog):
    """USE_POSTLN and NORMALIZE_MODULATOR change no shape: strict loading alone would accept the weights."""
    stored = setup['config'].clone()
    stored.defrost()
    stored.MODEL.FOCAL.USE_POSTLN = True
    stored.MODEL.FOCAL.NORMALIZE_MODULATOR = True
    stored.DATA.NUM_FRAMES = 8
    ckpt = tmp_path / 'other.pth'
    save_checkpoint(ckpt, {'model': setup['model'].state_dict(), 'config': config_to_yaml(stored), 'epoch': 0})
    args = ['--cfg', TOY_CFG, '--resume', str(ckpt), str(setup['tmp'] / 'v3.mp4'), '--views', '1x1',
            '--workers', '0', '--device', 'cpu', '--opts', *_opts(setup['tmp'])]
    assert predict.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(ckpt) in err[0], err
    assert 'MODEL.FOCAL.USE_POSTLN checkpoint True vs config False' in err[0]
    assert 'MODEL.FOCAL.NORMALIZE_MODULATOR checkpoint True vs config False' in err[0]
    # only input keys differ: a warning, the run goes on
    stored.MODEL.FOCAL.USE_POSTLN = stored.MODEL.FOCAL.NORMALIZE_MODULATOR = False
    save_checkpoint(ckpt, {'model': setup['model'].state_dict(), 'config': config_to_yaml(stored), 'epoch': 0})
    with caplog.at_level('WARNING', logger='engine.checkpoint.weights'):
        assert predict.main(args) == 0
    assert 'DATA.NUM_FRAMES checkpoint 8 vs config 4' in caplog.text


@pytest.mark.slow
def test_main_eval_refuses_crafted_checkpoints_in_one_line(setup, tmp_path):
    _write_safetensors(tmp_path / 'bad.safetensors', {'w': {'dtype': 'F32', 'shape': [9], 'data_offsets': [0, 4]}},
                       bytes(4))
    _flip_a_weight_bit(setup['ckpt'], tmp_path / 'flipped.pth')
    for path, named in ((tmp_path / 'bad.safetensors', 'needs 36 bytes'), (tmp_path / 'flipped.pth', 'CRC-32')):
        proc = _main(['--cfg', TOY_CFG, '--eval', '--resume', str(path), '--output', str(tmp_path / 'out'),
                      '--opts', *_opts(setup['tmp'])])
        assert proc.returncode == 2 and named in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------- decoder messages

def test_decord_native_log_is_silenced_where_the_error_reports_it(tmp_path, capfd):
    pytest.importorskip('decord')
    from datasets.decoders import VideoDecodeError, _native_log_dropped_on_error, open_video
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(b'not a video ' * 50)
    with pytest.raises(VideoDecodeError, match='garbage.mp4: cannot open with decord'):
        open_video(str(garbage), 'decord')
    assert 'video_reader.cc' not in capfd.readouterr().err
    # what else reaches the descriptor is kept; on success, everything is
    with pytest.raises(RuntimeError):
        with _native_log_dropped_on_error():
            os.write(2, b'[12:00:00] /src/video/video_reader.cc:83: ERROR opening\nother line\n')
            raise RuntimeError('x')
    assert capfd.readouterr().err == 'other line\n'
    with _native_log_dropped_on_error():
        os.write(2, b'[12:00:00] /src/x.cc:1: note\n')
    assert capfd.readouterr().err == '[12:00:00] /src/x.cc:1: note\n'


# ------------------------------------------------------------------------------------------- library entry points

class _Payload:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


@pytest.mark.parametrize('entry', ['hub', 'timm'])
def test_hub_and_timm_raise_one_exception_type_with_one_line_for_a_refused_pickle(tmp_path, entry):
    import timm
    from engine.checkpoint import CheckpointError, UnsafeCheckpointError
    evil = tmp_path / 'evil.pth'
    torch.save({'model': _Payload()}, evil)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'PK\x03\x04 not really a zip')

    def create(path):
        if entry == 'hub':
            return torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=str(path), trust_repo=True)
        return timm.create_model('video_focalnet_tiny', pretrained=True, pretrained_cfg_overlay={'file': str(path)})

    for path, kind in ((evil, UnsafeCheckpointError), (corrupt, CheckpointError)):
        with pytest.raises(kind) as info:
            create(path)
        assert '\n' not in str(info.value) and str(path) in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__
