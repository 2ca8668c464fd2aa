"""TRAIN.PRETRAINED_PATH: ImageNet FocalNet-SRF (microsoft and timm layouts) and video checkpoints."""
import json
import os

import pytest
import torch

from models import VideoFocalNet
from engine.checkpoint import CheckpointError, load_pretrained
from models.pretrained import (PretrainedMismatchError, detect_layout, is_temporal_key,
                              map_pretrained_state_dict)

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')  # golden data, tests/assets/README.md
TINY = dict(img_size=32, embed_dim=8, depths=(1, 1, 2, 1), num_frames=4, drop_path_rate=0.)
HEAD = ('head.weight', 'head.bias')


def _video_model(**overrides) -> VideoFocalNet:
    return VideoFocalNet(**{**TINY, 'num_classes': 7, **overrides})


def _state(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _imagenet_state_dict(seed: int = 0, **overrides) -> dict:
    """A microsoft FocalNet-SRF state dict for the tiny config: the video model's spatial keys and shapes
    (the 2D names are the same), a 1000-class head, values that differ from any fresh init."""
    generator = torch.Generator().manual_seed(seed)
    own = _video_model(**{'num_classes': 1000, **overrides}).state_dict()
    return {k: torch.randn(v.shape, generator=generator) for k, v in own.items() if not is_temporal_key(k)}


def _assert_untouched(model: torch.nn.Module, before: dict) -> None:
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f'{key} was modified'


@pytest.mark.parametrize('size', ['tiny', 'small', 'base'])
def test_released_srf_layout_covers_every_spatial_tensor_of_the_video_layout(size):
    """The real focalnet_{size}_srf key/shape list maps onto Video-FocalNet-{T,S,B} (shapes only, no model)."""
    with open(os.path.join(REFERENCE, 'focalnet2d_srf_state_dicts.json')) as f:
        source = {k: torch.empty(s, device='meta') for k, s in json.load(f)[f'focalnet_{size}_srf']}
    with open(os.path.join(REFERENCE, 'video_focalnet_state_dicts.json')) as f:
        video = json.load(f)[size]
    target = {k: tuple(s) for k, s in video['state_dict']}
    tensors, report = map_pretrained_state_dict(source, target)
    spatial = [k for k in target if not is_temporal_key(k) and k not in HEAD]
    assert report['layout'] == 'focalnet2d'
    assert report['loaded'] == spatial and sorted(tensors) == sorted(spatial)
    assert report['left_at_init'] == [k for k in target if is_temporal_key(k)]
    assert len(report['left_at_init']) == 6 * sum(video['depths'])  # f_t, h_t (weight, bias), 2 conv levels
    assert report['skipped'] == list(HEAD) and report['reinitialised'] == list(HEAD)
    # tubelet 2: the stem is the only tensor whose shape changes
    target['patch_embed.proj.weight'] = target['patch_embed.proj.weight'][:2] + (2,) + \
        target['patch_embed.proj.weight'][2:]
    tensors, report = map_pretrained_state_dict(source, target)
    assert report['inflated'] == ['patch_embed.proj.weight']
    assert tuple(tensors['patch_embed.proj.weight'].shape) == target['patch_embed.proj.weight']


def test_microsoft_layout_into_video_model(tmp_path):
    source = _imagenet_state_dict()
    path = tmp_path / 'focalnet_tiny_srf.pth'
    torch.save({'model': source, 'epoch': 299}, path)  # the microsoft release stores tensors under 'model'
    model = _video_model()
    before = _state(model)
    report = load_pretrained(model, path)

    own = model.state_dict()
    spatial = [k for k in own if not is_temporal_key(k) and k not in HEAD]
    temporal = [k for k in own if is_temporal_key(k)]
    assert report['layout'] == 'focalnet2d' and report['source'] == str(path)
    assert report['loaded'] == spatial and report['inflated'] == []
    assert report['left_at_init'] == temporal and len(temporal) == 6 * sum(TINY['depths'])
    assert report['skipped'] == list(HEAD) and report['reinitialised'] == list(HEAD)
    for key in spatial:
        assert torch.equal(own[key], source[key]), key
    for key in temporal:
        assert torch.equal(own[key], before[key]), key
    # head re-drawn like the original: weight AND bias ~ N(0, 0.02), not the ImageNet head, not a zero bias
    assert own['head.weight'].shape == (7, 64) and not torch.equal(own['head.weight'], before['head.weight'])
    assert own['head.bias'].abs().sum() > 0
    assert 0.005 < own['head.weight'].std() < 0.04


def test_stem_inflated_for_tubelets(tmp_path):
    source = _imagenet_state_dict()
    model = _video_model(tubelet_size=2)
    report = load_pretrained(model, {'model': source})
    assert report['inflated'] == ['patch_embed.proj.weight']
    weight = model.state_dict()['patch_embed.proj.weight']
    assert weight.shape == (8, 3, 2, 4, 4)
    for t in range(2):
        torch.testing.assert_close(weight[:, :, t], source['patch_embed.proj.weight'] / 2)
    assert torch.equal(model.state_dict()['patch_embed.proj.bias'], source['patch_embed.proj.bias'])
    # a static clip then gives the 2D stem's response
    frame = torch.randn(1, 3, 8, 8)
    out3d = torch.nn.functional.conv3d(frame.unsqueeze(2).repeat(1, 1, 2, 1, 1), weight, stride=(2, 4, 4))
    out2d = torch.nn.functional.conv2d(frame, source['patch_embed.proj.weight'], stride=4)
    torch.testing.assert_close(out3d[:, :, 0], out2d, rtol=1e-5, atol=1e-5)


def test_timm_layout_into_video_model(tmp_path):
    """timm's FocalNet names (stem, downsample in the next stage, head.fc) and 1x1 convs [C, C, 1, 1]."""
    from timm.models.focalnet import FocalNet, checkpoint_filter_fn
    microsoft = _imagenet_state_dict(seed=1)
    timm_model = FocalNet(embed_dim=TINY['embed_dim'], depths=TINY['depths'], num_classes=1000)
    # timm's own microsoft -> timm conversion, checked strictly against the timm model
    timm_model.load_state_dict(checkpoint_filter_fn({'model': microsoft}, timm_model), strict=True)
    timm_state = timm_model.state_dict()
    assert 'stem.proj.weight' in timm_state and timm_state['layers.0.blocks.0.mlp.fc1.weight'].dim() == 4
    path = tmp_path / 'pytorch_model.bin'
    torch.save(timm_state, path)  # timm publishes a bare state dict

    model = _video_model()
    before = _state(model)
    report = load_pretrained(model, path)
    own = model.state_dict()
    assert report['layout'] == 'timm'
    assert report['skipped'] == list(HEAD) and report['reinitialised'] == list(HEAD)
    assert len(report['loaded']) == len(microsoft) - 2
    for key in report['loaded']:
        assert torch.equal(own[key], microsoft[key]), key
    for key in report['left_at_init']:
        assert torch.equal(own[key], before[key]), key


def test_video_checkpoint_as_pretrained(tmp_path):
    """Fine-tuning from another video dataset: temporal tensors come along; the head only if classes agree."""
    source_model = _video_model(num_classes=5)
    source = {f'module.{k}': v for k, v in source_model.state_dict().items()}  # saved from a DDP model
    path = tmp_path / 'video-focalnet_tiny_k400.pth'
    torch.save({'model': source, 'epoch': 119, 'max_accuracy': 79.8}, path)

    model = _video_model(num_classes=7)
    report = load_pretrained(model, path)
    assert report['layout'] == 'video' and report['left_at_init'] == []
    assert report['reinitialised'] == list(HEAD) and report['skipped'] == list(HEAD)
    for key in report['loaded']:
        assert torch.equal(model.state_dict()[key], source_model.state_dict()[key]), key
    assert any(is_temporal_key(k) for k in report['loaded'])

    same_classes = _video_model(num_classes=5)
    report = load_pretrained(same_classes, path)
    assert report['reinitialised'] == [] and report['skipped'] == []
    for key, value in source_model.state_dict().items():
        assert torch.equal(same_classes.state_dict()[key], value), key

    tubelet = _video_model(num_classes=5, tubelet_size=2)
    assert load_pretrained(tubelet, path)['inflated'] == ['patch_embed.proj.weight']


def test_lrf_checkpoint_into_srf_model_is_refused_before_any_copy(tmp_path):
    lrf = _imagenet_state_dict(focal_levels=(3, 3, 3, 3))
    assert 'layers.0.blocks.0.modulation.focal_layers.2.0.weight' in lrf
    path = tmp_path / 'focalnet_tiny_lrf.pth'
    torch.save({'model': lrf}, path)
    model = _video_model()
    before = _state(model)
    with pytest.raises(PretrainedMismatchError) as info:
        load_pretrained(model, path)
    message = str(info.value)
    assert str(path) in message and 'nothing was loaded' in message and '\n' not in message
    assert 'modulation.f.weight: checkpoint [20, 8] vs model [19, 8]' in message
    assert 'focal level 3, the model 2' in message
    assert 'focal_layers.2.0.weight' in message  # the extra level has no place in the model
    _assert_untouched(model, before)


@pytest.mark.parametrize('problem', ['deeper_source', 'missing_tensor', 'not_focalnet'])
def test_other_mismatches_are_refused_before_any_copy(problem):
    if problem == 'deeper_source':  # e.g. focalnet_small weights into a tiny-depth model
        source, expected = _imagenet_state_dict(depths=(1, 1, 3, 1)), 'with no place in the model'
    elif problem == 'missing_tensor':
        source, expected = _imagenet_state_dict(), 'missing from the checkpoint (layers.1.blocks.0.norm2.bias)'
        del source['layers.1.blocks.0.norm2.bias']
    else:
        source, expected = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(1000, 64)}, 'missing'
    model = _video_model()
    before = _state(model)
    with pytest.raises(PretrainedMismatchError, match=expected.replace('(', r'\(').replace(')', r'\)')):
        load_pretrained(model, {'model': source})
    _assert_untouched(model, before)


def test_layout_detection_and_unreadable_file(tmp_path):
    assert detect_layout({'stem.proj.weight': torch.zeros(1)}) == 'timm'
    assert detect_layout({'layers.0.blocks.0.modulation.f_temporal.weight': torch.zeros(1)}) == 'video'
    assert detect_layout({'patch_embed.proj.weight': torch.zeros(1)}) == 'focalnet2d'
    bad = tmp_path / 'focalnet_tiny_srf.pth'
    bad.write_bytes(b'<html>404</html>')  # a failed download
    with pytest.raises(CheckpointError, match='not a readable PyTorch checkpoint'):
        load_pretrained(_video_model(), bad)


def test_video_checkpoint_head_dropped_with_a_note_and_new_head_on_request(tmp_path, caplog):
    """Fine-tuning a released video model on your own classes: a head of another width is dropped with a
    logged note; TRAIN.PRETRAINED_HEAD new also drops one of the same width (other classes, as many)."""
    import logging
    from types import SimpleNamespace

    source_model = _video_model(num_classes=5)
    path = tmp_path / 'video-focalnet_tiny_k400.pth'
    torch.save({'model': source_model.state_dict()}, path)
    with caplog.at_level(logging.INFO, logger='engine.checkpoint.weights'):
        load_pretrained(_video_model(num_classes=3), path)
    assert f'{path}: its 5-class head is dropped (the model has 3 classes); a new head is drawn' in caplog.text

    caplog.clear()
    config = SimpleNamespace(TRAIN=SimpleNamespace(PRETRAINED_HEAD='new'), MODEL=SimpleNamespace(NAME='own'))
    model = _video_model(num_classes=5)
    with caplog.at_level(logging.INFO, logger='engine.checkpoint.weights'):
        report = load_pretrained(model, path, config)
    assert report['reinitialised'] == list(HEAD) and report['skipped'] == list(HEAD)
    assert 'its 5-class head is dropped (TRAIN.PRETRAINED_HEAD new)' in caplog.text
    assert not torch.equal(model.head.weight, source_model.head.weight)
    assert torch.equal(model.patch_embed.proj.weight, source_model.patch_embed.proj.weight)
    config.TRAIN.PRETRAINED_HEAD = 'keep'
    with pytest.raises(ValueError, match="TRAIN.PRETRAINED_HEAD: expected one of"):
        load_pretrained(model, path, config)
