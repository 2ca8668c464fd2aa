"""tools/publish.py: exactly the model tensors and the config text survive; the hash in the name is the file's."""
import hashlib
import os
import re

import pytest
import torch
from torch import nn
from yacs.config import CfgNode

from tools import publish
from engine.checkpoint import capture_rng_state, load_model_weights, save_checkpoint


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 5)


def _training_checkpoint(model, ema_model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = sum(p.sum() for p in model.parameters())
    loss.backward()
    opt.step()
    return {
        'model': model.state_dict(),
        'optimizer': opt.state_dict(),
        'lr_scheduler': {'last_epoch': 3, 'base_values': [1e-3]},
        'scaler': {'scale': 65536.0, 'growth_tracker': 2},
        'rng': capture_rng_state(),
        'ema': {'model': ema_model.state_dict(), 'decay': 0.9998, 'num_updates': 10},
        'epoch': 3,
        'max_accuracy': 71.5,
        'config': 'MODEL:\n  NAME: tiny\n',
    }


@pytest.fixture
def models():
    torch.manual_seed(0)
    return _Tiny(), _Tiny()


def _check_published(path, expected_state):
    name = os.path.basename(path)
    match = re.fullmatch(r'release-([0-9a-f]{8})\.pth', name)
    assert match, name
    with open(path, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert sha.startswith(match.group(1))
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) - {'class_names'} == {'model', 'config', 'meta'}
    assert list(loaded['model']) == list(expected_state)
    for k, v in expected_state.items():
        assert torch.equal(loaded['model'][k], v) and loaded['model'][k].dtype == v.dtype, k
    return loaded, sha


def test_publish_keeps_model_and_config_only(tmp_path, models, capsys):
    model, ema_model = models
    ckpt = tmp_path / 'ckpt_epoch_3.pth'
    save_checkpoint(ckpt, _training_checkpoint(model, ema_model))
    out = tmp_path / 'release' / 'release.pth'
    assert publish.main([str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    path = re.search(r'wrote (\S+)', printed).group(1)
    loaded, sha = _check_published(path, model.state_dict())
    assert f'sha256 {sha}' in printed
    assert loaded['config'] == 'MODEL:\n  NAME: tiny\n'
    assert loaded['meta'] == {'source': 'ckpt_epoch_3.pth', 'weights': 'model', 'epoch': 3, 'max_accuracy': 71.5}
    assert os.path.getsize(path) < os.path.getsize(ckpt) / 2  # optimizer moments, EMA, RNG are gone
    # the release loads back into the model strictly
    fresh = _Tiny()
    load_model_weights(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    # the same command again: same content, same name, same sha256: done, the existing file is left alone
    before = os.path.getmtime(path)
    assert publish.main([str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f'already published (same sha256, file left as it is): {path}' in printed and f'sha256 {sha}' in printed
    assert os.path.getmtime(path) == before
    # another file under that name (a collision of the 8-digit prefix) is refused and kept
    with open(path, 'ab') as f:
        f.write(b'other content')
    assert publish.main([str(ckpt), str(out)]) == 2
    assert 'already exists with other content' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'release')) == [os.path.basename(path)]  # no temporary left behind


def test_publish_without_hard_links(tmp_path, models, monkeypatch):
    """File systems without hard links: the release is copied, still never over an existing file."""
    model, ema_model = models
    ckpt = tmp_path / 'last.pth'
    save_checkpoint(ckpt, _training_checkpoint(model, ema_model))

    def no_links(src, dst):
        raise PermissionError(1, 'Operation not permitted')

    monkeypatch.setattr(os, 'link', no_links)
    path, sha, _, new = publish.publish(str(ckpt), str(tmp_path / 'out' / 'release.pth'))
    _check_published(path, model.state_dict())
    assert new and publish.publish(str(ckpt), str(tmp_path / 'out' / 'release.pth')) == (path, sha, 0, False)
    with open(path, 'ab') as f:
        f.write(b'other content')
    with pytest.raises(FileExistsError, match='already exists with other content'):
        publish.publish(str(ckpt), str(tmp_path / 'out' / 'release.pth'))
    assert os.listdir(tmp_path / 'out') == [os.path.basename(path)]


def test_publish_ema_weights(tmp_path, models):
    model, ema_model = models
    with torch.no_grad():
        for p in ema_model.parameters():
            p.add_(1.0)
    ckpt = tmp_path / 'last.pth'
    save_checkpoint(ckpt, _training_checkpoint(model, ema_model))
    path, _, _, _ = publish.publish(str(ckpt), str(tmp_path / 'release.pth'), use_ema=True)
    loaded, _ = _check_published(path, ema_model.state_dict())
    assert loaded['meta']['weights'] == 'ema'
    ckpt_no_ema = tmp_path / 'no_ema.pth'
    for state in ({'model': model.state_dict()}, {'model': model.state_dict(), 'ema': None}):
        save_checkpoint(ckpt_no_ema, state)  # main.py stores 'ema': None when TRAIN.EMA is off
        with pytest.raises(RuntimeError, match="holds no EMA weights"):
            publish.publish(str(ckpt_no_ema), str(tmp_path / 'x.pth'), use_ema=True)


def test_publish_original_format_checkpoint(tmp_path, models):
    """The original pickled a yacs CfgNode (weights_only refuses it) and wrapped keys with 'module.'."""
    model, _ = models
    cfg = CfgNode({'MODEL': CfgNode({'NAME': 'videofocalnet_base', 'NUM_CLASSES': 400}),
                   'TRAIN': CfgNode({'OPTIMIZER': CfgNode({'BETAS': (0.9, 0.999)})})})
    ckpt = tmp_path / 'original.pth'
    torch.save({'model': {f'module.{k}': v for k, v in model.state_dict().items()}, 'optimizer': {},
                'lr_scheduler': {}, 'max_accuracy': 0.5, 'epoch': 119, 'config': cfg}, ckpt)
    with pytest.raises(Exception):
        torch.load(ckpt, weights_only=True)
    path, _, _, _ = publish.publish(str(ckpt), str(tmp_path / 'release.pth'))
    loaded, _ = _check_published(path, model.state_dict())
    assert 'NAME: videofocalnet_base' in loaded['config'] and '- 0.999' in loaded['config']
    assert loaded['meta']['epoch'] == 119


NAMES = ['jump', 'run, fast', 'sit', 'stand', 'wave']


def test_publish_stores_class_names(tmp_path, models, capsys):
    """Names travel with the weights: stored ones are kept, --labels sets them, a wrong count is refused."""
    model, ema_model = models
    ckpt = tmp_path / 'last.pth'
    save_checkpoint(ckpt, {**_training_checkpoint(model, ema_model), 'class_names': NAMES})
    assert publish.main([str(ckpt), str(tmp_path / 'a' / 'release.pth')]) == 0
    printed = capsys.readouterr().out
    assert 'class names: 5 stored' in printed
    loaded, _ = _check_published(re.search(r'wrote (\S+)', printed).group(1), model.state_dict())
    assert loaded['class_names'] == NAMES

    labels = tmp_path / 'labels.csv'
    labels.write_text('id,name\n' + ''.join(f'{i},{n.upper()}\n' for i, n in enumerate(NAMES)))
    path, _, named, _ = publish.publish(str(ckpt), str(tmp_path / 'b' / 'release.pth'), labels=str(labels))
    assert named == 5 and torch.load(path, weights_only=True)['class_names'] == [n.upper() for n in NAMES]

    labels.write_text('id,name\n0,jump\n1,run\n')
    assert publish.main([str(ckpt), str(tmp_path / 'c' / 'release.pth'), '--labels', str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '2 class names, but the model' in err[0] and 'has 5 classes' in err[0]
    assert not os.path.exists(tmp_path / 'c')


def test_publish_names_from_the_configured_label_list(tmp_path, models, capsys):
    """An older checkpoint without stored names: its config's DATA.LABEL_LIST is read (if it fits the head)."""
    model, ema_model = models
    labels = tmp_path / 'labels.csv'
    labels.write_text('id,name\n' + ''.join(f'{i},{n}\n' for i, n in enumerate(NAMES)))
    state = _training_checkpoint(model, ema_model)
    state['config'] = f'DATA:\n  LABEL_LIST: {labels}\nMODEL:\n  NUM_CLASSES: 5\n'
    ckpt = tmp_path / 'last.pth'
    save_checkpoint(ckpt, state)
    path, _, named, _ = publish.publish(str(ckpt), str(tmp_path / 'release.pth'))
    assert named == 5 and torch.load(path, weights_only=True)['class_names'] == NAMES
    # a list of another length than the head is not stored, and the tool says how to add names
    state['config'] = state['config'].replace('NUM_CLASSES: 5', 'NUM_CLASSES: 7')
    save_checkpoint(ckpt, state)
    assert publish.main([str(ckpt), str(tmp_path / 'x' / 'release.pth')]) == 0
    assert 'none stored (pass --labels CSV' in capsys.readouterr().out


@pytest.mark.parametrize('damage', ['nan', 'inf', 'zero_size'])
def test_publish_refuses_weights_no_one_should_download(tmp_path, models, capsys, damage):
    """A diverged or damaged checkpoint: one line naming the file and the tensor, exit 2, nothing written."""
    model, ema_model = models
    checkpoint = _training_checkpoint(model, ema_model)
    weights = checkpoint['model']
    if damage == 'nan':
        weights['conv.weight'][0, 0, 0, 0] = float('nan')
    elif damage == 'inf':
        weights['head.bias'][1] = float('inf')
    else:
        weights['head.weight'] = torch.zeros(0, 4)
    ckpt = tmp_path / 'diverged.pth'
    save_checkpoint(ckpt, checkpoint)
    out = tmp_path / 'rel' / 'release.pth'
    assert publish.main([str(ckpt), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: {ckpt}: '), err
    expected = {'nan': 'conv.weight (1 of', 'inf': 'head.bias (1 of', 'zero_size': 'head.weight [0, 4]'}[damage]
    assert expected in err[0]
    assert not out.parent.exists() or not os.listdir(out.parent)
