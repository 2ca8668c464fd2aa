"""torch.export of the model in eval mode, every design: the exported program equals eager, with a dynamic batch
and clip length, and survives torch.export.save / torch.export.load; tools.export writes checked .pt2 and
ONNX files (the ONNX test skips when the optional onnx / onnxscript / onnxruntime packages are absent)."""
import json
import os

import numpy as np
import pytest
import torch

from models import DESIGNS, build_model
from engine.config import load_config

TOY_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'toy',
                          'video-focalnet_toy.yaml')


@pytest.fixture(scope='module', params=DESIGNS)
def model(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = load_config(TOY_CONFIG,
                         ['DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'DATA.NUM_FRAMES', '4',
                          'MODEL.TUBELET_SIZE', '1',  # any clip length, not only multiples of a tubelet
                          'MODEL.FOCAL.DESIGN', request.param])
    torch.manual_seed(0)
    yield build_model(config).eval()
    torch.set_num_threads(threads)


def test_export_equals_eager_with_dynamic_batch_and_frames(model, tmp_path):
    batch = torch.export.Dim('batch', min=1, max=64)
    frames = torch.export.Dim('frames', min=1, max=64)
    example = torch.randn(2, 4, 3, 32, 32)
    program = torch.export.export(model, (example,), dynamic_shapes={'x': {0: batch, 1: frames}})
    path = tmp_path / 'video_focalnet.pt2'
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    exported = program.module()
    for b, t in ((2, 4), (1, 4), (3, 8), (2, 2)):
        x = torch.randn(b, t, 3, 32, 32)
        with torch.no_grad():
            eager = model(x)
            assert eager.shape == (b, model.num_classes)
            torch.testing.assert_close(exported(x), eager, atol=1e-5, rtol=0)
            torch.testing.assert_close(loaded(x), eager, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- tools.export
NAMES = ['jump', 'run, fast', 'sit', 'stand', 'wave']


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A toy checkpoint (5 named classes, 4 frames of 32 px, tubelet 2) as training writes it."""
    from engine.checkpoint import make_checkpoint, save_checkpoint
    from engine.checkpoint.schema import KEYS
    from engine.config import config_to_yaml
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp('export')
    labels = tmp / 'labels.csv'
    labels.write_text('id,name\n' + ''.join(f'{i},"{n}"\n' for i, n in enumerate(NAMES)))
    config = load_config(TOY_CONFIG, ['DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'DATA.NUM_FRAMES', '4',
                                      'MODEL.TUBELET_SIZE', '2', 'DATA.NUM_CLASSES', '5', 'MODEL.NUM_CLASSES', '5',
                                      'DATA.LABEL_LIST', str(labels)])
    torch.manual_seed(0)
    model = build_model(config).eval()
    entries = {k: None for k in KEYS if k != 'class_names'}
    entries.update(model=model.state_dict(), config=config_to_yaml(config))
    path = tmp / 'toy.pth'
    save_checkpoint(path, make_checkpoint(**entries))
    yield dict(path=str(path), model=model, tmp=tmp)
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tools_export_pt2_is_checked_and_carries_names(checkpoint, capsys):
    from tools import export
    out = checkpoint['tmp'] / 'toy.pt2'
    assert export.main(['--resume', checkpoint['path'], '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'torch.export, dynamic batch and clip length, 5 classes' in printed
    assert 'checked with torch.export.load against PyTorch on 2x4x3x32x32, 1x6x3x32x32' in printed
    extra = {'class_names.json': '', 'input.json': ''}
    loaded = torch.export.load(str(out), extra_files=extra).module()
    assert json.loads(extra['class_names.json']) == NAMES
    assert json.loads(extra['input.json'])['frames_multiple_of'] == 2
    x = torch.randn(3, 8, 3, 32, 32)  # another batch and clip length than the example
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), checkpoint['model'](x), atol=1e-5, rtol=0)
    assert [p.name for p in checkpoint['tmp'].iterdir() if '.tmp' in p.name] == []


@pytest.mark.slow
def test_tools_export_bad_input_and_failed_check_keep_the_old_file(checkpoint, capsys, monkeypatch):
    from tools import export
    tmp = checkpoint['tmp']
    assert export.main(['--resume', checkpoint['path'], '--out', str(tmp / 'toy.txt')]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {tmp / 'toy.txt'}: expected a .pt2 (torch.export) " \
                                              "or .onnx file name"
    assert export.main(['--resume', checkpoint['path'], '--out', str(tmp / 'x.pt2'), '--frames', '3']) == 2
    assert 'multiple of MODEL.TUBELET_SIZE (2)' in capsys.readouterr().err
    old = tmp / 'old.pt2'
    old.write_bytes(b'an earlier export')

    original = torch.export.export

    def wrong(model, *args, **kwargs):  # an exporter that would change the numbers
        program = original(model, *args, **kwargs)
        program.state_dict['head.bias'] = torch.nn.Parameter(program.state_dict['head.bias'].detach() + 1.0)
        return program

    monkeypatch.setattr(torch.export, 'export', wrong)
    assert export.main(['--resume', checkpoint['path'], '--out', str(old)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: check failed: ') and 'differ from PyTorch by up to 1' in err[0]
    assert old.read_bytes() == b'an earlier export'
    assert [p.name for p in tmp.iterdir() if '.tmp' in p.name] == []


def test_tools_export_onnx_without_the_packages_is_one_line(checkpoint, capsys, monkeypatch):
    import sys
    from tools import export
    monkeypatch.setitem(sys.modules, 'onnxscript', None)  # as if not installed
    assert export.main(['--resume', checkpoint['path'], '--out', str(checkpoint['tmp'] / 'x.onnx')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'ONNX export needs the optional packages onnx and onnxscript' in err[0]


@pytest.mark.slow
def test_tools_export_onnx_matches_pytorch_in_onnxruntime(checkpoint, capsys):
    """Opset 18, dynamic batch and clip length, checked on the CPU with onnxruntime to 1e-4 (the tool's check)
    and here again on another shape. Skipped when the optional onnx packages are not installed."""
    pytest.importorskip('onnx')
    pytest.importorskip('onnxscript')
    ort = pytest.importorskip('onnxruntime')
    import onnx
    from tools import export
    out = checkpoint['tmp'] / 'toy.onnx'
    assert export.main(['--resume', checkpoint['path'], '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'ONNX opset 18, dynamic batch and clip length' in printed
    assert 'checked with onnxruntime (CPU) against PyTorch on 2x4x3x32x32, 1x6x3x32x32' in printed
    proto = onnx.load(str(out))
    assert any(o.domain in ('', 'ai.onnx') and o.version == 18 for o in proto.opset_import)
    assert json.loads({p.key: p.value for p in proto.metadata_props}['class_names']) == NAMES
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    x = torch.randn(3, 8, 3, 32, 32)
    with torch.no_grad():
        expected = checkpoint['model'](x).numpy()
    got = session.run(None, {'clips': x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
