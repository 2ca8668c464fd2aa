"""hubconf.py and the timm names load a local checkpoint into the same model as build_model + load_state_dict."""
import os

import pytest
import timm
import torch

import models  # noqa: F401  (registers the timm names)
from models import build_model
from engine.checkpoint import CheckpointError, make_checkpoint, save_checkpoint
from engine.checkpoint.schema import KEYS
from engine.config import config_to_yaml, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a toy-sized tiny: the hub/timm kwargs below describe the same architecture as these config overrides
OPTS = ['DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'DATA.NUM_CLASSES', '5',
        'MODEL.NUM_CLASSES', '5', 'MODEL.FOCAL.DEPTHS', '[1, 1, 2, 1]', 'MODEL.FOCAL.EMBED_DIM', '16',
        'MODEL.TUBELET_SIZE', '1', 'MODEL.FOCAL.MLP_RATIO', '4.0']
KWARGS = dict(embed_dim=16, depths=(1, 1, 2, 1), num_frames=4, img_size=32)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = load_config('configs/toy/video-focalnet_toy.yaml', OPTS)
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = str(tmp_path_factory.mktemp('hub') / 'toy.pth')
    save_checkpoint(path, {'model': model.state_dict(), 'config': config_to_yaml(config), 'optimizer': {}})
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, 32, 32)
    fresh = build_model(config).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True)['model'])
    with torch.no_grad():
        logits = fresh(x)
    yield dict(path=path, x=x, logits=logits)
    torch.set_num_threads(threads)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_torch_hub_local_checkpoint(reference):
    model = torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=reference['path'],
                           num_classes=5, **KWARGS)
    assert torch.equal(_logits(model, reference['x']), reference['logits'])
    import hubconf
    assert hubconf.dependencies == ['torch', 'timm', 'yacs']
    assert all(callable(getattr(hubconf, f'video_focalnet_{s}')) for s in ('tiny', 'small', 'base'))


def test_torch_hub_mismatch_is_an_error_naming_the_hub_argument(reference):
    with pytest.raises(CheckpointError) as info:
        torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=reference['path'],
                       num_classes=7, **KWARGS)
    message = str(info.value)
    assert 'num_classes=7' in message and "head has 5 classes; leave num_classes out" in message
    assert 'MODEL.' not in message and 'TRAIN.' not in message and '--pretrained' not in message
    # an architecture argument that contradicts the weights: the call is named, not config keys
    with pytest.raises(CheckpointError) as info:
        torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=reference['path'], mlp_ratio=2.0)
    message = str(info.value)
    assert message.startswith("video_focalnet_tiny(checkpoint=") and 'mlp_ratio=2.0' in message
    assert 'mlp.fc1.weight: checkpoint [64, 16] vs model [32, 16]' in message and 'MODEL.' not in message


def test_torch_hub_reads_classes_architecture_and_names_from_the_checkpoint(tmp_path):
    """A 7-class checkpoint (with names) loads without num_classes or any architecture argument."""
    names = [f'action {i}' for i in range(7)]
    labels = tmp_path / 'labels.csv'
    labels.write_text('id,name\n' + ''.join(f'{i},{n}\n' for i, n in enumerate(names)))
    # OPTS with 7 classes instead of 5 (later --opts win) and a label list
    opts = OPTS + ['DATA.NUM_CLASSES', '7', 'MODEL.NUM_CLASSES', '7', 'DATA.LABEL_LIST', str(labels)]
    config = load_config('configs/toy/video-focalnet_toy.yaml', opts)
    torch.manual_seed(0)
    model = build_model(config).eval()
    entries = {k: None for k in KEYS if k != 'class_names'}
    entries.update(model=model.state_dict(), config=config_to_yaml(config))
    path = str(tmp_path / 'seven.pth')
    save_checkpoint(path, make_checkpoint(**entries))
    x = torch.randn(1, 4, 3, 32, 32)
    hub = torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=path)
    assert hub.num_classes == 7 and hub.class_names == names
    assert torch.equal(_logits(hub, x), _logits(model, x))
    # weights only (no config, no names): the shapes give width, depths, MLP ratio and the 7 classes
    bare = str(tmp_path / 'bare.pth')
    torch.save(model.state_dict(), bare)
    hub = torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=bare)
    assert hub.num_classes == 7 and hub.class_names is None
    assert torch.equal(_logits(hub, x), _logits(model, x))


def test_torch_hub_names_the_entry_of_a_published_size(tmp_path):
    """Video-FocalNet-S weights through the tiny entry: the error names the entry to use (no model is built)."""
    state = {'patch_embed.proj.weight': torch.zeros(96, 3, 1, 4, 4), 'head.weight': torch.zeros(400, 768)}
    state.update({f'layers.{s}.blocks.{b}.norm1.weight': torch.zeros(1)
                  for s, depth in enumerate((2, 2, 18, 2)) for b in range(depth)})
    path = str(tmp_path / 'small.pth')
    torch.save({'model': state}, path)
    with pytest.raises(CheckpointError, match="holds Video-FocalNet-S \\(width 96, depths 2-2-18-2\\); load it "
                                              "with the 'video_focalnet_small' entry"):
        torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=path)


def test_timm_pretrained_file(reference):
    model = timm.create_model('video_focalnet_tiny', pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=reference['path']), **KWARGS)
    assert torch.equal(_logits(model, reference['x']), reference['logits'])


def test_entry_points_come_from_the_architecture_table_and_take_a_design():
    import hubconf
    from models.architectures import ARCHITECTURES
    assert [n for n in dir(hubconf) if n.startswith('video_focalnet_')] == sorted(
        f'video_focalnet_{size}' for size in ARCHITECTURES)
    assert 'width 128, depths 2-2-18-2' in hubconf.video_focalnet_base.__doc__
    model = torch.hub.load(REPO, 'video_focalnet_tiny', source='local', num_classes=5, design='divided', **KWARGS)
    assert model.design == 'divided' and model.layers[0].blocks[0].modulation_temporal is not None
    assert _logits(model, torch.randn(1, 4, 3, 32, 32)).shape == (1, 5)


def test_torch_hub_list_shows_only_the_models(monkeypatch):
    # torch.hub.list fetches GitHub repositories only: point its fetch at this checkout and keep its listing rule
    monkeypatch.setattr(torch.hub, '_get_cache_or_reload', lambda *args, **kwargs: REPO)
    from models.architectures import ARCHITECTURES
    assert sorted(torch.hub.list('owner/video-focalnets', verbose=False)) == sorted(
        f'video_focalnet_{size}' for size in ARCHITECTURES)


def test_torch_hub_wrong_num_classes_suggests_a_call_that_works(reference):
    """The suggested new-head call runs as printed, on a checkpoint of another width, depth and clip length
    than the entry's published size, and gives the checkpoint's backbone under a new head."""
    with pytest.raises(CheckpointError) as info:
        torch.hub.load(REPO, 'video_focalnet_tiny', source='local', checkpoint=reference['path'], num_classes=7)
    suggestion = str(info.value).split('to fine-tune use ', 1)[1]
    namespace = {}
    exec(suggestion.replace('; ', '\nmodel = ', 1), namespace)
    model = namespace['model']
    assert model.num_classes == 7
    saved = torch.load(reference['path'], weights_only=True)['model']
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in saved.items() if not k.startswith('head.'))
