"""timm's model API on the registered Video-FocalNet names, with a video input: what timm's generic model tests
and a timm user read (head_hidden_size, reset_classifier/create_model with global_pool, features_only,
torch.fx feature extraction by node name, the clip length in the pretrained config)."""
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torchvision.models.feature_extraction import create_feature_extractor

import models  # noqa: F401  (registers the timm names)
from datasets import normalize_clip
from models.features import VideoFeatures
from models.layers import Mlp, PatchEmbed

NAME = 'video_focalnet_tiny'
# the tiny model: one block per stage, width 8; 2 frames of 32x32 pixels
TINY = dict(embed_dim=8, depths=[1, 1, 1, 1], img_size=32, num_frames=2, num_classes=3, drop_path_rate=0.)
STAGES = 4


pytestmark = pytest.mark.usefixtures('one_torch_thread')  # conftest.py: tiny models, one thread


def _clip(batch=2, frames=2, size=32):
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(0))


def _tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(NAME, **{**TINY, **kwargs}).eval()


def test_head_hidden_size_is_the_width_the_head_reads():
    model = _tiny()
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(_clip()), pre_logits=True)
    assert model.head_hidden_size == model.num_features == model.get_classifier().in_features == pooled.shape[-1] == 64


def test_reset_classifier_and_create_model_take_global_pool():
    model = _tiny()
    x = _clip()
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
        model.reset_classifier(0, global_pool='avg')
        torch.testing.assert_close(model(x), pooled)
        model.reset_classifier(0, '')  # timm's pass-through: the unpooled tokens
        torch.testing.assert_close(model(x), tokens)
        model.reset_classifier(5)  # None keeps the pooling: a head on every token
        assert model(x).shape == tokens.shape[:-1] + (5,) and model.global_pool == ''
    with pytest.raises(ValueError, match=r"global_pool: expected one of \['avg', ''\], got 'max'"):
        model.reset_classifier(0, global_pool='max')

    avg = _tiny(global_pool='avg')
    unpooled = _tiny(global_pool='')
    with torch.no_grad():
        torch.testing.assert_close(avg(x), _tiny()(x))  # 'avg' is the default
        assert unpooled(x).shape == (2, 2, 1, 1, 3)  # (B, T, H/32, W/32, classes)
    with pytest.raises(ValueError, match='global_pool'):
        _tiny(global_pool='token')


def test_features_only_gives_one_video_map_per_stage():
    x = _clip()
    full = _tiny()
    with torch.no_grad():
        expected = full.forward_intermediates(x, intermediates_only=True)
    features = _tiny(features_only=True)  # timm's defaults: every stage, channels first
    assert isinstance(features, VideoFeatures)
    assert features.feature_info.channels() == [8, 16, 32, 64]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert features.feature_info.module_name() == [f'layers.{i}.blocks.0' for i in range(STAGES)]
    with torch.no_grad():
        maps = features(x)
    assert len(maps) == STAGES
    for info, fmap, ref in zip(features.feature_info.get_dicts(), maps, expected):
        assert fmap.shape == (2, info['num_chs'], 2, 32 // info['reduction'], 32 // info['reduction'])
        torch.testing.assert_close(fmap, ref.permute(0, 4, 1, 2, 3))
    assert 'num_classes' not in features.pretrained_cfg and features.pretrained_cfg['num_frames'] == 2

    # a subset, channels last: the stages after the last one asked for are not kept
    last_two = _tiny(features_only=True, out_indices=(1, -1), output_fmt='NTHWC')
    assert last_two.feature_info.channels() == [16, 64] and len(last_two.model.layers) == STAGES
    first = _tiny(features_only=True, out_indices=(0,), feature_cls='Getter')  # timm's name of the same wrapper
    assert isinstance(first, VideoFeatures)
    assert len(first.model.layers) == 1 and isinstance(first.model.head, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(last_two(x), [expected[1], expected[3]])
        torch.testing.assert_close(first(x)[0], expected[0].permute(0, 4, 1, 2, 3))


def test_features_only_refuses_what_it_cannot_give_in_one_line():
    with pytest.raises(ValueError, match=r'out_indices \(0, 1, 2, 3, 4\): the model has 4 stages \(indices 0 to 3\)'):
        _tiny(features_only=True, out_indices=(0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"feature_cls 'hook' is an image \(2-D\) feature wrapper.*"
                                         r"forward_intermediates"):
        _tiny(features_only=True, feature_cls='hook')
    with pytest.raises(ValueError, match=r"output_fmt: expected one of \['NCTHW', 'NTHWC'\]"):
        _tiny(features_only=True, output_fmt='NCHW')


def test_features_only_loads_a_classifier_checkpoint(tmp_path):
    full = _tiny(seed=1)
    path = str(tmp_path / 'weights.pth')
    torch.save({'model': full.state_dict()}, path)
    features = _tiny(seed=2, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=path))
    x = _clip()
    with torch.no_grad():
        expected = full.forward_intermediates(x, intermediates_only=True, output_fmt='NCTHW')
        torch.testing.assert_close(features(x), expected)


# torchvision notes that dropout makes the train graph longer than the eval graph: expected here
@pytest.mark.filterwarnings('ignore:NOTE. The nodes obtained by tracing')
def test_fx_feature_extraction_by_node_name():
    model = _tiny(drop_path_rate=0.1)  # train-mode tracing goes through stochastic depth and dropout too
    stage_nodes = [info['module'] for info in model.feature_info]
    extractor = create_feature_extractor(model, return_nodes=stage_nodes + ['norm', 'head']).eval()
    x = _clip()
    with torch.no_grad():
        out = extractor(x)
        final, stages = model.forward_intermediates(x)
        for name, expected in zip(stage_nodes, stages):
            torch.testing.assert_close(out[name], expected)
        torch.testing.assert_close(out['norm'], final)
        torch.testing.assert_close(out['head'], model(x))
        # the traced graph takes any clip length, as the model does
        longer = _clip(batch=1, frames=4)
        torch.testing.assert_close(extractor(longer)['head'], model(longer))


def test_pretrained_cfg_gives_the_clip_length_for_a_video_input():
    with torch.device('meta'):
        published = timm.create_model('video_focalnet_base.ssv2')
    assert published.pretrained_cfg['num_frames'] == published.num_frames == 8
    assert resolve_data_config(model=published)['input_size'] == (3, 224, 224)

    # docs/model.md's recipe: timm's per-frame transform from the data config, num_frames frames stacked on dim 1
    model = _tiny(num_frames=4)
    config = resolve_data_config(model=model)
    transform = create_transform(**config)
    frames = torch.randint(0, 256, (model.pretrained_cfg['num_frames'], 224, 224, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    clip = torch.stack([transform(Image.fromarray(f.numpy())) for f in frames])[None]
    assert clip.shape == (1, 4) + config['input_size']
    # the same input the project's own pipeline gives the model (ImageNet normalisation of 0-255 values)
    torch.testing.assert_close(clip, normalize_clip(frames.permute(0, 3, 1, 2))[None], rtol=0, atol=1e-5)
    with torch.no_grad():
        assert model(clip).shape == (1, 3)


@pytest.mark.filterwarnings('ignore:.*torch.jit.script.* is deprecated:FutureWarning')
@pytest.mark.parametrize('tubelet', [1, 2])
def test_stem_and_mlp_script(tubelet):
    """The whole model is not scriptable (docs/model.md: use torch.export); its stem and MLP are, and give the
    eager results."""
    torch.manual_seed(0)
    stem = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8, is_stem=True, tubelet_size=tubelet)
    mlp = Mlp(8, 16)
    x = _clip(size=30)  # not a multiple of the patch: the padding path too
    with torch.no_grad():
        tokens = stem(x)
        torch.testing.assert_close(torch.jit.script(stem)(x), tokens)
        torch.testing.assert_close(torch.jit.script(mlp)(tokens), mlp(tokens))
