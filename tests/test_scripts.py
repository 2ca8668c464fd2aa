"""scripts/: every shipped config has a launch script naming it, and the scripts really launch main.py
(one process directly, two through torchrun) with the extra arguments passed through."""
import glob
import os
import re
import subprocess

import pytest

from engine_helpers import REPO, env, free_port, make_tiny_data, tiny_opts

CONFIGS = sorted(os.path.relpath(p, REPO)
                 for p in glob.glob(os.path.join(REPO, 'configs', '*', 'video-focalnet_*.yaml')))


@pytest.mark.parametrize('config', CONFIGS)
def test_every_config_has_a_script_that_launches_it(config):
    dataset, name = config.split(os.sep)[1:]
    script = os.path.join(REPO, 'scripts', dataset, 'train.sh' if dataset == 'toy' else name.replace('.yaml', '.sh'))
    text = open(script).read()
    assert re.search(r'exec "\$\(dirname "\$\{BASH_SOURCE\[0\]\}"\)/\.\./launch\.sh" ' + re.escape(config) + r' "\$@"',
                     text), script
    assert os.access(script, os.X_OK), f'{script} is not executable'


@pytest.mark.slow
@pytest.mark.parametrize('gpus', [1, 2])
def test_toy_script_runs_main_with_passed_through_arguments(tmp_path, gpus):
    data = make_tiny_data(str(tmp_path / 'data'), num_train=4, num_val=1)
    run_env = dict(env(), GPUS=str(gpus), OUTPUT=str(tmp_path / 'out'), MASTER_PORT=str(free_port()))
    proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'toy', 'train.sh'), '--throughput',
                           '--opts', *tiny_opts(data)], cwd=str(tmp_path), env=run_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'throughput:' in proc.stdout and 'clips/s' in proc.stdout
    assert f'world_size {gpus}' in proc.stdout
