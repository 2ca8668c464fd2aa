"""torch.export of the model in eval mode, every design: the exported program equals eager, with a dynamic batch
and clip length, and survives torch.export.save / torch.export.load."""
import os

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
