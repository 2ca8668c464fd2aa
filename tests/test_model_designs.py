"""MODEL.FOCAL.DESIGN: every design of the paper's study builds, trains (every parameter gets a gradient), takes
the 2-D weights where they have a place, and orders frames (or, for ``spatial``, provably does not)."""
import os

import pytest
import torch

from models import DESIGNS, VideoFocalNet, build_model
from models.pretrained import is_temporal_key, map_pretrained_state_dict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(REPO_ROOT, 'tests', 'assets', 'vectors_small.pt')  # golden data, tests/assets/README.md
TINY = dict(embed_dim=8, depths=[1, 2, 1, 1], num_classes=5, img_size=32, num_frames=4, drop_path_rate=0.)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clip(batch=2, frames=4, size=32, seed=1):
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _perturb_(model, seed=0):
    """Make every tensor non-trivial: xavier Linear weights (with the default std 0.02 the modulations, where
    frames interact, are ~1e-4 of the residual stream; see MODEL.INIT), then noise on everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight, generator=g)
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.add_(0.1 * noise if p.ndim <= 1 else 0.3 * p.std() * noise)
    return model


def test_design_list_and_default():
    assert DESIGNS == ('parallel', 'spatial', 'factorized', 'divided', 'joint')
    assert VideoFocalNet(**TINY).design == 'parallel'
    with pytest.raises(ValueError, match="design: expected one of"):
        VideoFocalNet(**TINY, design='sequential')


def test_parallel_design_is_the_released_model():
    data = torch.load(VECTORS, weights_only=True)
    model = VideoFocalNet(**data['kwargs'], design='parallel').eval()
    model.load_state_dict(data['state_dict'], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(data['input']), data['logits'], rtol=0, atol=1e-4)


@pytest.mark.parametrize('design', DESIGNS)
def test_forward_backward_every_parameter_gets_gradient(design):
    kw = dict(TINY, drop_path_rate=0.2, drop_rate=0.1, use_layerscale=True, use_postln_in_modulation=True)
    torch.manual_seed(0)
    model = VideoFocalNet(**kw, design=design).train()
    out = model(_clip())
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def _new_tensors(design):
    """Tensors of the design that a 2-D FocalNet does not have (besides the head)."""
    with torch.device('meta'):
        keys = list(VideoFocalNet(**TINY, design=design).state_dict())
    return [k for k in keys if is_temporal_key(k)]


def test_which_tensors_are_new():
    per_block = {
        'parallel': ['modulation.f_temporal', 'modulation.h_temporal', 'modulation.focal_layers_temporal.0.0',
                     'modulation.focal_layers_temporal.1.0'],
        'divided': ['norm_temporal', 'modulation_temporal.f', 'modulation_temporal.h',
                    'modulation_temporal.proj', 'modulation_temporal.focal_layers.0.0',
                    'modulation_temporal.focal_layers.1.0'],
    }
    for design, parts in per_block.items():
        new = _new_tensors(design)
        assert {k.split('.', 4)[4].rsplit('.', 1)[0] for k in new} == set(parts), design
        assert all(k.startswith('layers.') for k in new)
    assert _new_tensors('spatial') == [] and _new_tensors('joint') == []
    factorized = _new_tensors('factorized')
    assert factorized and all(k.startswith(('temporal_encoder.blocks.0.', 'norm_temporal.')) for k in factorized)
    assert len(VideoFocalNet(**TINY, design='factorized').temporal_encoder.blocks) == TINY['depths'][-1]


@pytest.mark.parametrize('design', DESIGNS)
def test_imagenet_weights_fill_every_place_they_have(design):
    """A 2-D FocalNet state dict (the spatial design's keys, which are the 2-D names) initialises every
    design: all non-new tensors are copied or inflated, the new ones are left at init."""
    g = torch.Generator().manual_seed(0)
    with torch.device('meta'):
        source_shapes = VideoFocalNet(**{**TINY, 'num_classes': 1000}, design='spatial').state_dict()
    source = {k: torch.randn(v.shape, generator=g) for k, v in source_shapes.items()}
    with torch.device('meta'):
        target = {k: tuple(v.shape) for k, v in VideoFocalNet(**TINY, design=design).state_dict().items()}
    tensors, report = map_pretrained_state_dict(source, target)
    new = _new_tensors(design)
    assert report['left_at_init'] == new and report['reinitialised'] == ['head.weight', 'head.bias']
    expected_inflated = [k for k in target if '.modulation.focal_layers.' in k] if design == 'joint' else []
    assert report['inflated'] == expected_inflated
    assert sorted(report['loaded'] + report['inflated']) == sorted(set(target) - set(new) - {'head.weight',
                                                                                            'head.bias'})
    for key in report['inflated']:  # the 2-D kernel averaged over the temporal extent (I3D's rule)
        k = target[key][2]
        torch.testing.assert_close(tensors[key], source[key].unsqueeze(2).expand(target[key]) / k)


def test_spatial_design_is_the_2d_focalnet_applied_to_every_frame():
    """timm's 2-D FocalNet with the same weights gives the spatial design's logits on a one-frame clip,
    and on a static clip (the frames are averaged after the per-frame network)."""
    from timm.models.focalnet import FocalNet
    torch.manual_seed(0)
    net2d = _perturb_(FocalNet(embed_dim=8, depths=(1, 2, 1, 1), num_classes=5, drop_path_rate=0.)).eval()
    video = VideoFocalNet(**TINY, design='spatial').eval()
    own = video.state_dict()
    tensors, report = map_pretrained_state_dict(net2d.state_dict(), {k: v.shape for k, v in own.items()})
    assert report['layout'] == 'timm' and report['left_at_init'] == [] and report['inflated'] == []
    tensors.update({'head.weight': net2d.head.fc.weight, 'head.bias': net2d.head.fc.bias})
    video.load_state_dict(tensors, strict=True)
    image = _clip(batch=2, frames=1)[:, 0]
    with torch.no_grad():
        expected = net2d(image)
        torch.testing.assert_close(video(image[:, None]), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(video(image[:, None].expand(-1, 3, -1, -1, -1)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize('design', DESIGNS)
def test_frame_order(design):
    """Tubelet 1, so the stem does not mix frames: reversing the frames changes nothing for ``spatial``
    (frames only meet in the final average) and changes the logits of every design that models time."""
    torch.manual_seed(0)
    model = _perturb_(VideoFocalNet(**TINY, tubelet_size=1, design=design)).eval()
    x = _clip(frames=6)
    with torch.no_grad():
        forward, backward = model(x), model(x.flip(1))
    if design == 'spatial':
        torch.testing.assert_close(backward, forward, rtol=0, atol=1e-5)
    else:
        assert (backward - forward).abs().max() > 1e-2 * forward.abs().max(), design


@pytest.mark.parametrize('design', DESIGNS)
def test_checkpointing_modes_give_the_same_output_and_gradients(design):
    torch.manual_seed(0)
    model = VideoFocalNet(**{**TINY, 'drop_path_rate': 0.3}, design=design, selective_checkpoint=False).train()
    x = _clip()
    results = []
    for selective, full in ((False, False), (True, False), (False, True)):
        model.set_selective_checkpointing(selective)
        model.set_grad_checkpointing(full)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    for out, grads in results[1:]:
        torch.testing.assert_close(out, results[0][0], rtol=0, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, results[0][1][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize('design', DESIGNS)
def test_return_modulators(design):
    model = VideoFocalNet(**TINY, design=design).eval()
    x = _clip()
    with torch.no_grad():
        logits, mods = model.forward_with_modulators(x)
        torch.testing.assert_close(logits, model(x))
    blocks = [f'layers.{i}.blocks.{j}' for i, d in enumerate(TINY['depths']) for j in range(d)]
    if design == 'factorized':
        blocks += ['temporal_encoder.blocks.0']
    assert list(mods) == blocks
    names = {'parallel': {'modulator', 'modulator_temporal', 'gates', 'gates_temporal'},
             'divided': {'modulator', 'modulator_temporal', 'gates', 'gates_temporal'},
             'spatial': {'modulator', 'gates'}, 'joint': {'modulator', 'gates'}, 'factorized': {'modulator', 'gates'}}
    assert set(mods['layers.0.blocks.0']) == names[design]
    assert mods['layers.0.blocks.0']['modulator'].shape == (2, 4, 8, 8, 8)
    if design == 'factorized':
        assert set(mods['temporal_encoder.blocks.0']) == {'modulator_temporal', 'gates_temporal'}
        assert mods['temporal_encoder.blocks.0']['modulator_temporal'].shape == (2, 4, 1, 1, 64)


@pytest.mark.parametrize('design', DESIGNS)
def test_build_model_reads_the_design(design):
    from engine.config import load_config
    config = load_config(os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml'),
                         ['MODEL.FOCAL.DESIGN', design, 'DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32'])
    model = build_model(config)
    assert model.design == design
    assert model(torch.randn(1, 4, 3, 32, 32)).shape == (1, 8)


def test_unknown_design_in_config_is_a_config_error():
    from engine.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="MODEL.FOCAL.DESIGN: expected one of \\['parallel'"):
        load_config(os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml'),
                    ['MODEL.FOCAL.DESIGN', 'sequential'])
