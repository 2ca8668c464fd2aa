"""tools.finetune_size and scripts/finetune.sh: the fine-tune recipe is the one of the checkpoint's model (toy, T,
S, B), read from its weight shapes; a checkpoint that fits no recipe is one line naming what it holds."""
import json
import os
import subprocess
import sys

import pytest
import torch

from engine_helpers import REPO, env

REFERENCE = os.path.join(os.path.dirname(REPO), 'shared', 'reference', 'video_focalnet_state_dicts.json')


def _released_like(path, size):
    """A file with the key names and shapes of the released checkpoint of ``size``; every tensor is a
    stride-0 view of one number, so the file is a few kB."""
    if not os.path.isfile(REFERENCE):
        pytest.skip('reference state dict shapes (../shared/reference) not available')
    with open(REFERENCE) as f:
        shapes = json.load(f)[size]['state_dict']
    one = torch.zeros(1)
    torch.save({'model': {key: one.expand(*shape) for key, shape in shapes}}, path)
    return str(path)


def _toy_checkpoint(path, **focal):
    from engine.checkpoint import save_checkpoint
    from engine.config import get_default_config, merge_config_file
    from models import build_model
    config = get_default_config()
    merge_config_file(config, os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml'))
    for key, value in focal.items():
        setattr(config.MODEL.FOCAL, key, value)
    save_checkpoint(path, {'model': build_model(config).state_dict()})
    return str(path)


@pytest.mark.parametrize('size', ['tiny', 'small', 'base'])
def test_released_sizes_get_their_recipe(tmp_path, size):
    from tools.finetune_size import finetune_size
    assert finetune_size(_released_like(tmp_path / 'k400.pth', size)) == size


def test_toy_checkpoint_and_an_unknown_model(tmp_path, capsys):
    from tools.finetune_size import finetune_size, main
    assert finetune_size(_toy_checkpoint(tmp_path / 'toy.pth')) == 'toy'
    odd = _toy_checkpoint(tmp_path / 'odd.pth', EMBED_DIM=24)
    assert main([odd]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'{odd}: holds a Video-FocalNet of width 24, depths 1-1-2-1' in err
    assert 'no fine-tune recipe has that model' in err


PYTHON_STUB = """#!/usr/bin/env bash
# main.py (the launch) is recorded; anything else (the size detection, the manifest read) is the real python
if [ "$1" = "main.py" ]; then printf '%s\\n' "$@" > "$LAUNCHED"; exit 0; fi
exec {python} "$@"
"""


@pytest.mark.slow
def test_finetune_script_picks_the_recipe_from_the_checkpoint(tmp_path):
    data = tmp_path / 'own'
    data.mkdir()
    for name in ('labels.csv', 'train.csv', 'val.csv'):
        (data / name).write_text('')
    stub = tmp_path / 'python'
    stub.write_text(PYTHON_STUB.format(python=sys.executable))
    stub.chmod(0o755)
    launched = tmp_path / 'launched.txt'
    run_env = dict(env(), PYTHON=str(stub), GPUS='1', LAUNCHED=str(launched))
    run_env.pop('MODEL', None)

    def launch(checkpoint, **variables):
        if launched.exists():
            launched.unlink()
        proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'finetune.sh'), str(data), checkpoint],
                              env=dict(run_env, **variables), capture_output=True, text=True, timeout=120,
                              cwd=str(tmp_path))
        argv = launched.read_text().split('\n')[:-1] if launched.exists() else []
        return proc, argv

    toy = _toy_checkpoint(tmp_path / 'toy.pth')
    proc, argv = launch(os.path.relpath(toy, tmp_path))   # a path relative to where the user stands
    assert proc.returncode == 0, proc.stderr
    assert argv[argv.index('--cfg') + 1] == 'configs/finetune/video-focalnet_toy.yaml'
    if os.path.isfile(REFERENCE):
        proc, argv = launch(_released_like(tmp_path / 'small.pth', 'small'))
        assert proc.returncode == 0, proc.stderr
        assert argv[argv.index('--cfg') + 1] == 'configs/finetune/video-focalnet_small.yaml'
    proc, argv = launch(toy, MODEL='toy')                 # MODEL still chooses when given
    assert argv[argv.index('--cfg') + 1] == 'configs/finetune/video-focalnet_toy.yaml'
    proc, argv = launch(_toy_checkpoint(tmp_path / 'odd.pth', EMBED_DIM=24))
    assert proc.returncode == 2 and argv == []
    assert proc.stderr.count('\n') == 1 and 'holds a Video-FocalNet of width 24' in proc.stderr
