"""Video-FocalNet model: equality with the original (reference vectors and the in-tests reference
implementation, for every option), checkpoint layout, training behaviour and the model API."""
import json
import logging
import os

import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import models
from models import VideoFocalNet, build_model
from benchmarks.reference_video_focalnet import ReferenceVideoFocalNet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_DIR = os.path.join(REPO_ROOT, 'tests', 'assets')  # golden data, see tests/assets/README.md
VECTORS = os.path.join(REFERENCE_DIR, 'vectors_small.pt')
STATE_DICTS = os.path.join(REFERENCE_DIR, 'video_focalnet_state_dicts.json')

TINY = dict(embed_dim=8, depths=[1, 1, 1, 1], num_classes=5, img_size=32, num_frames=4, drop_path_rate=0.)

OPTIONS = {
    'default': {},
    'tubelet2': dict(tubelet_size=2),
    'conv_embed': dict(use_conv_embed=True),
    'conv_embed_tubelet2': dict(use_conv_embed=True, tubelet_size=2),
    'layerscale': dict(use_layerscale=True, layerscale_value=0.5),
    'postln': dict(use_postln=True),
    'postln_in_modulation': dict(use_postln_in_modulation=True),
    'normalize_modulator': dict(normalize_modulator=True),
    'focal_per_stage': dict(focal_levels=[1, 2, 3, 2], focal_windows=[3, 5, 1, 3], focal_factors=[2, 4, 2, 0]),
    'one_frame': dict(num_frames=1),
    'seven_frames': dict(num_frames=7, depths=[1, 2, 1, 1]),
    'odd_image_size': dict(img_size=42),
    'patch2_mlp2_no_patch_norm_1chan': dict(patch_size=2, mlp_ratio=2., patch_norm=False, in_chans=1, img_size=24),
    'all_block_options': dict(use_layerscale=True, layerscale_value=0.7, use_postln=True,
                              use_postln_in_modulation=True, normalize_modulator=True, use_conv_embed=True),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and a second OpenMP thread makes them very slow when other
    processes occupy the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturbed_state_dict(model, seed=0):
    """The model's weights with every tensor made non-trivial (norm weights != 1, biases != 0, ...)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        noise = torch.randn(v.shape, generator=g)
        if k.endswith(('gamma_1', 'gamma_2')):
            out[k] = 0.5 + 0.2 * noise
        elif v.ndim <= 1:
            out[k] = v + 0.1 * noise
        else:
            out[k] = v + 0.2 * v.std() * noise
    return out


def _pair(**kwargs):
    """(reference, ours) with identical random weights, eval mode."""
    torch.manual_seed(0)
    ref = ReferenceVideoFocalNet(**kwargs)
    ours = VideoFocalNet(**kwargs)
    sd = _perturbed_state_dict(ref)
    ref.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)
    return ref.eval(), ours.eval()


def _clip(kw, batch=2, frames=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    size = kw.get('img_size', 224)
    return torch.randn(batch, frames or kw['num_frames'], kw.get('in_chans', 3), size, size, generator=g)


# --- equality with the original -------------------------------------------------------------------------

@pytest.mark.parametrize('impl', [ReferenceVideoFocalNet, VideoFocalNet])
def test_reference_vectors(impl):
    data = torch.load(VECTORS, weights_only=True)
    model = impl(**data['kwargs']).eval()
    model.load_state_dict(data['state_dict'], strict=True)
    assert list(model.state_dict()) == list(data['state_dict'])
    with torch.no_grad():
        logits = model(data['input'])
        torch.testing.assert_close(logits, data['logits'], rtol=0, atol=1e-4)
        probe = data['probe']
        assert probe['module'] == 'layers.0.blocks.0.modulation'
        modulation = model.get_submodule(probe['module'])
        x = probe['input']  # (B*T, H, W, C) as in the original
        if impl is VideoFocalNet:
            out = modulation(x.reshape(-1, data['kwargs']['num_frames'], *x.shape[1:])).reshape(x.shape)
        else:
            out = modulation(x)
        torch.testing.assert_close(out, probe['output'], rtol=0, atol=1e-4)


@pytest.mark.parametrize('option', list(OPTIONS))
def test_matches_reference_implementation(option):
    kw = {**TINY, **OPTIONS[option]}
    ref, ours = _pair(**kw)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = _clip(kw)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x)), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize('option', ['default', 'tubelet2', 'all_block_options', 'focal_per_stage'])
def test_gradients_match_reference_implementation(option):
    kw = {**TINY, **OPTIONS[option]}
    ref, ours = _pair(**kw)
    ref.train()
    ours.train()
    x = _clip(kw)
    target = torch.randn(x.shape[0], kw['num_classes'], generator=torch.Generator().manual_seed(3))
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ref(xr) * target).sum().backward()
    (ours(xo) * target).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-3, atol=1e-5)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize('frames', [2, 6])
def test_frame_count_taken_from_input(frames):
    kw = dict(TINY)
    ref, _ = _pair(**{**kw, 'num_frames': frames})
    ours = VideoFocalNet(**kw).eval()  # built for 4 frames
    ours.load_state_dict(ref.state_dict())
    x = _clip(kw, frames=frames)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-4)


# --- checkpoint layout ----------------------------------------------------------------------------------

@pytest.mark.parametrize('variant', ['tiny', 'small', 'base'])
def test_state_dict_layout_of_released_checkpoints(variant):
    with open(STATE_DICTS) as f:
        entry = json.load(f)[variant]
    kwargs = {k: v for k, v in entry.items() if k not in ('params', 'gmacs_per_view', 'state_dict')}
    with torch.device('meta'):
        model = VideoFocalNet(**kwargs)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == entry['state_dict']
    assert sum(p.numel() for p in model.parameters()) == entry['params']
    assert not list(model.buffers())


def test_optional_keys():
    model = VideoFocalNet(**TINY, use_layerscale=True, use_postln_in_modulation=True)
    keys = set(model.state_dict())
    for key in ('layers.0.blocks.0.gamma_1', 'layers.0.blocks.0.gamma_2',
                'layers.0.blocks.0.modulation.ln.weight', 'layers.0.blocks.0.modulation.ln.bias'):
        assert key in keys
    tubelet = VideoFocalNet(**{**TINY, 'tubelet_size': 2})
    assert tuple(tubelet.patch_embed.proj.weight.shape) == (8, 3, 2, 4, 4)


def test_initialisation():
    torch.manual_seed(0)
    model = VideoFocalNet(embed_dim=32, depths=[1, 1, 1, 1], num_classes=400)
    fc1 = model.layers[2].blocks[0].mlp.fc1.weight
    assert abs(fc1.std().item() - 0.02) < 0.002 and fc1.abs().max() < 0.2
    assert torch.all(model.layers[2].blocks[0].mlp.fc1.bias == 0)
    assert torch.all(model.norm.weight == 1) and torch.all(model.norm.bias == 0)
    # convolutions keep PyTorch's kaiming-uniform default: bound 1/sqrt(fan_in)
    temporal = model.layers[0].blocks[0].modulation.focal_layers_temporal[1][0].weight  # (32, 32, 5)
    assert temporal.abs().max() <= 1 / (32 * 5) ** 0.5 + 1e-6
    assert temporal.abs().max() > 0.5 / (32 * 5) ** 0.5


# --- training behaviour ---------------------------------------------------------------------------------

def _train_step(model, x, seed):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_forward_backward_every_parameter_gets_gradient():
    kw = {**TINY, 'drop_path_rate': 0.2, 'drop_rate': 0.1, 'use_layerscale': True, 'use_postln_in_modulation': True}
    model = VideoFocalNet(**kw).train()
    out, grads = _train_step(model, _clip(kw), seed=0)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    names = [n for n, _ in model.named_parameters()]
    assert sorted(grads) == sorted(names)
    for name, grad in grads.items():
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize('mode', ['selective', 'full'])
def test_checkpointing_same_output_and_gradients(mode):
    kw = {**TINY, 'drop_path_rate': 0.3, 'drop_rate': 0.1}
    model = VideoFocalNet(**kw, selective_checkpoint=False).train()
    x = _clip(kw)
    out_plain, grads_plain = _train_step(model, x, seed=7)
    model.set_selective_checkpointing(mode == 'selective')
    model.set_grad_checkpointing(mode == 'full')
    out_ckpt, grads_ckpt = _train_step(model, x, seed=7)
    torch.testing.assert_close(out_ckpt, out_plain, rtol=0, atol=1e-6)
    assert grads_ckpt.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)


class _StorageTracker(TorchDispatchMode):
    """Remembers (weakly) the storage of every tensor produced while active."""

    def __init__(self):
        super().__init__()
        self.storages = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == 'cpu':
                # a weak reference keeps the storage object's address from being reused: cdata is unique
                ref = StorageWeakRef(t.untyped_storage())
                self.storages.setdefault(ref.cdata, (ref, t.untyped_storage().nbytes()))
        return out

    def alive_bytes(self):
        return sum(n for ref, n in self.storages.values() if not ref.expired())


def _retained_bytes(model, x):
    """Bytes of tensors created by the forward pass that are still alive afterwards (kept for backward)."""
    tracker = _StorageTracker()
    with tracker:
        out = model(x)
    retained = tracker.alive_bytes() - out.untyped_storage().nbytes()
    out.sum().backward()
    return retained


def test_checkpointing_modes_keep_less_memory():
    kw = dict(TINY, embed_dim=16, depths=[2, 2, 2, 2], img_size=64)
    x = _clip(kw)
    model = VideoFocalNet(**kw, selective_checkpoint=False).train()
    plain = _retained_bytes(model, x)
    model.set_selective_checkpointing(True)
    selective = _retained_bytes(model, x)
    model.set_grad_checkpointing(True)
    full = _retained_bytes(model, x)
    assert selective < 0.7 * plain
    assert full < 0.35 * plain
    model.set_grad_checkpointing(False)
    model.set_selective_checkpointing(False)
    assert _retained_bytes(model, x) == plain
    assert all(s.grad_checkpointing for s in VideoFocalNet(**kw, use_checkpoint=True).layers)


@pytest.mark.parametrize('mode', ['video', 'frame'])
def test_drop_path_mode(mode):
    model = VideoFocalNet(**{**TINY, 'drop_path_rate': 0.5}, drop_path_mode=mode).train()
    drop = model.layers[3].blocks[0].drop_path
    assert drop.drop_prob == 0.5 and drop.mode == mode
    torch.manual_seed(0)
    y = drop(torch.ones(64, 4, 2, 2, 3))
    kept = y.flatten(2).amax(-1) > 0  # (clips, frames)
    assert set(y.unique().tolist()) <= {0., 2.}
    per_clip_constant = bool((kept == kept[:, :1]).all())
    assert per_clip_constant == (mode == 'video')
    with pytest.raises(ValueError, match='drop_path_mode'):
        VideoFocalNet(**TINY, drop_path_mode='batch')


def test_drop_rate_is_honoured():
    model = VideoFocalNet(**TINY, drop_rate=0.25)
    rates = {name: m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    # the original's meaning: stem, MLPs and projections; dropout before the head is a separate rate
    assert rates.pop('head_drop') == 0.0 and set(rates.values()) == {0.25}
    assert model.pos_drop.p == 0.25 and model.layers[0].blocks[0].modulation.proj_drop.p == 0.25
    assert VideoFocalNet(**TINY, head_drop_rate=0.5).head_drop.p == 0.5
    model.train()
    x = _clip(TINY)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


# --- API ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('tubelet', [1, 2])
def test_return_modulators(tubelet):
    kw = {**TINY, 'tubelet_size': tubelet, 'depths': [1, 2, 1, 1], 'focal_levels': [2, 3, 2, 1]}
    model = VideoFocalNet(**kw).eval()
    x = _clip(kw)
    with torch.no_grad():
        logits, mods = model.forward_with_modulators(x)
        torch.testing.assert_close(logits, model(x))
    expected_blocks = ['layers.0.blocks.0', 'layers.1.blocks.0', 'layers.1.blocks.1', 'layers.2.blocks.0',
                       'layers.3.blocks.0']
    assert list(mods) == expected_blocks
    frames = 4 // tubelet
    for name, m in mods.items():
        stage = int(name.split('.')[1])
        side, dim, levels = 8 >> stage, 8 << stage, kw['focal_levels'][stage]
        assert set(m) == {'modulator', 'modulator_temporal', 'gates', 'gates_temporal'}
        assert m['modulator'].shape == m['modulator_temporal'].shape == (2, frames, side, side, dim)
        assert m['gates'].shape == m['gates_temporal'].shape == (2, frames, side, side, levels + 1)


def _module_state(model):
    return {name: dict(vars(m)) for name, m in model.named_modules()}


def test_forward_stores_nothing_on_modules():
    kw = {**TINY, 'drop_path_rate': 0.1}
    model = VideoFocalNet(**kw)
    before = _module_state(model)
    x = _clip(kw)
    model.train()
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        model(x)
        model.forward_with_modulators(x)
    model.train()  # restore the flags that train()/eval() legitimately change
    after = _module_state(model)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].keys() == after[name].keys(), name
        for key, value in before[name].items():
            if key in ('_parameters', '_buffers', '_modules'):
                assert list(value) == list(after[name][key]), (name, key)
            else:
                assert after[name][key] is value or after[name][key] == value, (name, key)


@pytest.mark.parametrize('mode', ['eval', 'train', 'train_selective'])
def test_no_graph_breaks_under_torch_compile(mode):
    import torch._dynamo
    kw = {**TINY, 'drop_path_rate': 0.1, 'drop_rate': 0.1}
    model = VideoFocalNet(**kw, selective_checkpoint=mode == 'train_selective').train(mode != 'eval')
    torch._dynamo.reset()
    with torch.set_grad_enabled(mode != 'eval'):
        explanation = torch._dynamo.explain(model)(_clip(kw))
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_no_weight_decay():
    model = VideoFocalNet(**TINY, use_layerscale=True, use_postln_in_modulation=True)
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names <= params.keys()
    assert names == {n for n, p in params.items() if p.ndim == 1}
    for expected in ('patch_embed.norm.weight', 'patch_embed.proj.bias', 'norm.weight', 'head.bias',
                     'layers.0.blocks.0.gamma_1', 'layers.0.blocks.0.modulation.ln.weight',
                     'layers.0.blocks.0.modulation.f.bias', 'layers.0.downsample.norm.bias'):
        assert expected in names
    for decayed in ('head.weight', 'layers.0.blocks.0.modulation.f.weight',
                    'layers.0.blocks.0.modulation.focal_layers_temporal.0.0.weight'):
        assert decayed not in names


def test_reset_classifier_and_attributes():
    model = VideoFocalNet(**TINY)
    assert (model.num_classes, model.num_features, model.num_frames, model.tubelet_size) == (5, 64, 4, 1)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.head.weight.shape == (7, 64)
    assert torch.all(model.head.bias == 0)
    with torch.no_grad():
        assert model(_clip(TINY)).shape == (2, 7)
        model.reset_classifier(0)
        assert model(_clip(TINY)).shape == (2, 64)


def test_bad_input_is_rejected():
    model = VideoFocalNet(**{**TINY, 'tubelet_size': 2})
    with pytest.raises(ValueError, match='multiple of tubelet_size'):
        model(torch.zeros(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, T, 3, H, W\)'):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match='focal_levels'):
        VideoFocalNet(**TINY, focal_levels=[2, 2])
    with pytest.raises(ValueError, match='odd'):
        VideoFocalNet(**TINY, focal_factors=1)


# --- construction from configs and timm -----------------------------------------------------------------

def _toy_config(*opts):
    from engine.config import load_config
    return load_config(os.path.join(REPO_ROOT, 'configs', 'toy', 'video-focalnet_toy.yaml'), list(opts))


def test_model_type_naming_another_size_warns(caplog):
    with caplog.at_level(logging.WARNING, logger='models.build'):
        build_model(_toy_config())                                        # TYPE videofocalnet: custom size
        assert not caplog.records
        model = build_model(_toy_config('MODEL.TYPE', 'videofocalnet_base'))
    assert model.embed_dim[0] == 16     # built from MODEL.FOCAL, as documented
    assert 'names Video-FocalNet-B (EMBED_DIM 128' in caplog.text and 'EMBED_DIM 16' in caplog.text


def test_build_model_reads_every_key():
    config = _toy_config(
        'MODEL.DROP_RATE', '0.1', 'MODEL.HEAD_DROP_RATE', '0.3', 'MODEL.DROP_PATH_RATE', '0.2',
        'MODEL.DROP_PATH_MODE', 'frame',
        'MODEL.TUBELET_SIZE', '2', 'DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '48', 'TRAIN.USE_CHECKPOINT', 'True',
        'MODEL.FOCAL.EMBED_DIM', '8', 'MODEL.FOCAL.DEPTHS', '[1, 2, 1]', 'MODEL.FOCAL.FOCAL_LEVELS', '[1, 2, 3]',
        'MODEL.FOCAL.FOCAL_WINDOWS', '[3, 1, 3]', 'MODEL.FOCAL.FOCAL_FACTORS', '[2, 2, 4]',
        'MODEL.FOCAL.MLP_RATIO', '2.0', 'MODEL.FOCAL.PATCH_SIZE', '2', 'MODEL.FOCAL.USE_LAYERSCALE', 'True',
        'MODEL.FOCAL.LAYERSCALE_VALUE', '0.3', 'MODEL.FOCAL.USE_POSTLN', 'True',
        'MODEL.FOCAL.USE_POSTLN_IN_MODULATION', 'True', 'MODEL.FOCAL.NORMALIZE_MODULATOR', 'True',
        'MODEL.FOCAL.USE_CONV_EMBED', 'True', 'MODEL.FOCAL.PATCH_NORM', 'False',
        'TRAIN.SELECTIVE_CHECKPOINT', 'False')
    model = build_model(config)
    assert (model.num_frames, model.tubelet_size, model.num_classes, model.img_size) == (4, 2, 8, 48)
    assert [len(s.blocks) for s in model.layers] == [1, 2, 1]
    assert model.num_features == 32 and model.patch_embed.norm is None
    assert all(s.grad_checkpointing and not s.selective_checkpointing for s in model.layers)
    assert all(s.selective_checkpointing for s in build_model(_toy_config()).layers)
    assert model.layers[0].blocks[0].mlp.fc1.out_features == 16
    assert model.layers[2].blocks[0].drop_path.drop_prob == pytest.approx(0.2)
    assert model.layers[2].blocks[0].drop_path.mode == 'frame'
    assert model.pos_drop.p == 0.1 and model.layers[0].blocks[0].mlp.drop1.p == 0.1
    assert model.head_drop.p == 0.3
    assert model.layers[2].blocks[0].modulation.kernel_sizes == [3, 7, 11]
    assert model.layers[1].blocks[0].modulation.kernel_sizes == [1, 3]
    assert torch.all(model.layers[0].blocks[0].gamma_1 == 0.3)
    assert model.layers[0].blocks[0].use_postln and model.layers[0].blocks[0].modulation.ln is not None
    assert model.layers[0].blocks[0].modulation.normalize_modulator
    assert tuple(model.patch_embed.proj.kernel_size) == (2, 7, 7)
    assert model(torch.randn(1, 4, 3, 48, 48)).shape == (1, 8)


def test_build_model_rejects_bad_config():
    from engine.config import ConfigError
    with pytest.raises(ConfigError, match='MODEL.TYPE'):
        build_model(_toy_config('MODEL.TYPE', 'resnet50'))
    with pytest.raises(ConfigError, match='MODEL.FOCAL.FOCAL_LEVELS'):
        build_model(_toy_config('MODEL.FOCAL.FOCAL_LEVELS', '[2, 2]'))


def test_timm_create_model(tmp_path):
    import timm
    model = timm.create_model('video_focalnet_tiny', embed_dim=8, depths=[1, 1, 1, 1], num_classes=3,
                              num_frames=2, img_size=32)
    assert isinstance(model, VideoFocalNet) and model.num_classes == 3
    assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 3)
    with torch.device('meta'):
        base = timm.create_model('video_focalnet_base.ssv2')
        small = timm.create_model('video_focalnet_small')
    assert (base.num_classes, base.embed_dim[0], [len(s.blocks) for s in base.layers]) == (174, 128, [2, 2, 18, 2])
    assert (small.num_classes, small.embed_dim[0], [len(s.blocks) for s in small.layers]) == (400, 96, [2, 2, 18, 2])
    with pytest.raises(RuntimeError, match='pretrained_cfg_overlay'):
        timm.create_model('video_focalnet_tiny', pretrained=True, embed_dim=8, depths=[1, 1, 1, 1])

    path = str(tmp_path / 'weights.pth')
    torch.save({'model': model.state_dict(), 'epoch': 3}, path)
    loaded = timm.create_model('video_focalnet_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path),
                               embed_dim=8, depths=[1, 1, 1, 1], num_classes=3)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    other_head = timm.create_model('video_focalnet_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path),
                                   embed_dim=8, depths=[1, 1, 1, 1], num_classes=6)
    assert other_head.head.weight.shape == (6, 64)
    assert torch.equal(other_head.layers[3].blocks[0].mlp.fc2.weight, model.layers[3].blocks[0].mlp.fc2.weight)


# --- timm-style API: tokens, head, parameter groups, stage features ------------------------------------

def test_forward_features_are_unpooled_tokens_and_forward_head_pools():
    kw = dict(TINY, img_size=64)
    model = VideoFocalNet(**kw).eval()
    x = _clip(kw)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 4, 2, 2, 64)  # (B, T, H/32, W/32, C): normalised, not pooled
        pooled = model.forward_head(tokens, pre_logits=True)
        torch.testing.assert_close(pooled, tokens.mean((2, 3)).mean(1))
        torch.testing.assert_close(model.forward_head(tokens), model(x))
        torch.testing.assert_close(model.head(pooled), model(x))


@pytest.mark.parametrize('design', ['parallel', 'factorized'])
def test_group_matcher_orders_parameters_from_stem_to_head(design):
    from timm.models import group_parameters
    model = VideoFocalNet(**{**TINY, 'depths': [1, 2, 1, 1]}, design=design)
    names = [n for n, _ in model.named_parameters()]
    fine = group_parameters(model, model.group_matcher(coarse=False))
    groups = [fine[i] for i in sorted(fine)]
    assert sorted(n for g in groups for n in g) == sorted(names)  # every parameter in exactly one group
    assert all(n.startswith('patch_embed.') for n in groups[0]) and groups[-1] == ['head.weight', 'head.bias']
    order = {n: i for i, g in enumerate(groups) for n in g}
    assert order['layers.0.blocks.0.norm1.weight'] < order['layers.1.blocks.0.norm1.weight'] \
        < order['layers.1.blocks.1.norm1.weight'] < order['layers.3.blocks.0.norm1.weight']
    assert order['norm.weight'] == order['layers.3.blocks.0.norm1.weight']  # the final norm joins the last block
    assert order['layers.1.downsample.proj.weight'] == order['layers.1.blocks.1.mlp.fc2.weight']  # joins its stage
    blocks = 5 + (1 if design == 'factorized' else 0)
    assert len(groups) == 1 + blocks + 1  # stem, one per block, head
    if design == 'factorized':
        assert order['norm.weight'] < order['temporal_encoder.blocks.0.norm1.weight'] == order['norm_temporal.weight']
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    # stem, one per stage, the temporal encoder, then the head (with the final norm, as in timm's FocalNet)
    assert len(coarse) == 1 + 4 + (1 if design == 'factorized' else 0) + 1
    assert coarse[max(coarse)] == ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']
    # layer-wise LR decay through timm's optimizer factory: the stem learns slowest, the head fastest
    from timm.optim import create_optimizer_v2
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-3, layer_decay=0.5)
    scales = {id(p): g['lr_scale'] for g in optimizer.param_groups for p in g['params']}
    params = dict(model.named_parameters())
    assert scales[id(params['patch_embed.proj.weight'])] < scales[id(params['layers.2.blocks.0.mlp.fc1.weight'])] \
        < scales[id(params['head.weight'])] == 1.0


@pytest.mark.parametrize('output_fmt', ['NTHWC', 'NCTHW'])
def test_forward_intermediates_and_feature_info(output_fmt):
    kw = dict(TINY, img_size=64)
    model = VideoFocalNet(**kw).eval()
    x = _clip(kw)
    assert [(f['num_chs'], f['reduction']) for f in model.feature_info] == [(8, 4), (16, 8), (32, 16), (64, 32)]
    hooked = {}
    for info in model.feature_info:  # the named modules output the stage features
        model.get_submodule(info['module']).register_forward_hook(
            lambda m, i, o, name=info['module']: hooked.__setitem__(name, o))
    with torch.no_grad():
        final, features = model.forward_intermediates(x, output_fmt=output_fmt)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(features) == 4
        for info, feature in zip(model.feature_info, features):
            expected = hooked[info['module']]
            if output_fmt == 'NCTHW':
                expected = expected.permute(0, 4, 1, 2, 3)
            torch.testing.assert_close(feature, expected)
        last_two = model.forward_intermediates(x, indices=2, norm=True, intermediates_only=True, stop_early=True)
        torch.testing.assert_close(last_two[1], model.forward_features(x))
        assert [f.shape[-1] for f in last_two] == [32, 64]
        first = model.forward_intermediates(x, indices=[0], intermediates_only=True, stop_early=True)
        as_nthwc = features[0] if output_fmt == 'NTHWC' else features[0].permute(0, 2, 3, 4, 1)
        torch.testing.assert_close(first[0], as_nthwc)
    with pytest.raises(ValueError, match='output_fmt'):
        model.forward_intermediates(x, output_fmt='NCHW')
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert len(model.layers) == 2 and model.layers[1].downsample is None and len(model.feature_info) == 2
    with torch.no_grad():
        assert [f.shape[-1] for f in model.forward_intermediates(x, intermediates_only=True)] == [8, 16]


def _registered_variants():
    import timm
    return timm.list_models('video_focalnet_*')


# every registered name with the released design, every other design at the tiny's depths (small and base
# have the same depths, and the designs share everything outside the blocks)
CONTRACT_CASES = [(name, 'parallel') for name in ('video_focalnet_tiny', 'video_focalnet_small', 'video_focalnet_base')
                  ] + [('video_focalnet_tiny', design) for design in ('spatial', 'factorized', 'divided', 'joint')]


@pytest.mark.parametrize('name, design', CONTRACT_CASES)
def test_contract_of_every_registered_variant(name, design):
    """timm's model contract for the registered names (their depths; width 8 to stay fast) and the designs:
    forward shape, finite, every parameter gets a gradient, reset_classifier, checkpointing gives the same
    output. (Export: tests/test_export.py, for every design.)"""
    import timm
    assert sorted(_registered_variants()) == ['video_focalnet_base', 'video_focalnet_small', 'video_focalnet_tiny']
    torch.manual_seed(0)
    model = timm.create_model(name, embed_dim=8, img_size=32, num_frames=2, num_classes=3, design=design,
                              drop_path_rate=0.).train()
    assert [len(s.blocks) for s in model.layers] == list(models.ARCHITECTURES[name.rsplit('_', 1)[1]]['depths'])
    x = torch.randn(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), out, rtol=0, atol=1e-6)
    model.eval()
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
