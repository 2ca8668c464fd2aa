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


def test_finetune_script_refuses_missing_inputs(tmp_path):
    script = os.path.join(REPO, 'scripts', 'finetune.sh')
    proc = subprocess.run(['bash', script, str(tmp_path), str(tmp_path / 'none.pth')], capture_output=True, text=True)
    assert proc.returncode == 2 and 'labels.csv not found' in proc.stderr and 'datasets.prepare folder' in proc.stderr
    for name in ('labels.csv', 'train.csv', 'val.csv'):
        (tmp_path / name).write_text('')
    proc = subprocess.run(['bash', script, str(tmp_path), str(tmp_path / 'none.pth')], capture_output=True, text=True)
    assert proc.returncode == 2 and 'none.pth: checkpoint not found' in proc.stderr
    proc = subprocess.run(['bash', script, str(tmp_path), script], capture_output=True, text=True,
                          env=dict(env(), MODEL='huge'))
    assert proc.returncode == 2 and 'MODEL=huge: expected one of: base small tiny toy' in proc.stderr


@pytest.mark.slow
def test_finetune_script_from_a_prepared_folder_with_a_new_head(tmp_path):
    """scripts/finetune.sh DATA_DIR PRETRAINED: classes from the folder's labels.csv, DATA.ROOT from its
    manifest, the pretrained video checkpoint's head dropped (logged) and a new one trained."""
    import torch

    from datasets.prepare.folder import main as prepare_folder
    from engine.checkpoint import save_checkpoint
    from engine.config import load_config
    from models import build_model

    toy = make_tiny_data(str(tmp_path / 'toy'), num_train=8, num_val=1)
    videos = tmp_path / 'my videos'
    for line in open(os.path.join(toy, 'train.csv')).read().split()[:6]:
        path, label = line.rsplit(',', 1)
        folder = videos / ('pair, even' if int(label) % 2 == 0 else 'odd one')
        folder.mkdir(parents=True, exist_ok=True)
        os.link(os.path.join(toy, path), folder / os.path.basename(path))
    data = tmp_path / 'own'
    assert prepare_folder(['--videos', str(videos), '--out', str(data), '--val-fraction', '0.3']) == 0

    labels5 = tmp_path / 'labels5.csv'
    labels5.write_text('id,name\n' + ''.join(f'{i},c{i}\n' for i in range(5)))
    small = ['DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32']
    config = load_config(os.path.join(REPO, 'configs', 'finetune', 'video-focalnet_toy.yaml'),
                         ['DATA.LABEL_LIST', str(labels5), *small])
    pretrained = tmp_path / 'pretrained.pth'
    save_checkpoint(pretrained, {'model': build_model(config).state_dict()})

    run_env = dict(env(), MODEL='toy', OUTPUT=str(tmp_path / 'out'), GPUS='1')
    proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'finetune.sh'), str(data), str(pretrained),
                           '--opts', *small, 'TRAIN.EPOCHS', '1', 'DATA.NUM_WORKERS', '0', 'DATA.BATCH_SIZE', '2',
                           'TEST.NUM_CLIP', '1', 'TEST.NUM_CROP', '1', 'TRAIN.FINAL_TEST', 'False',
                           'TENSORBOARD', 'False'],
                          cwd=str(tmp_path), env=run_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'{pretrained}: its 5-class head is dropped (the model has 2 classes)' in proc.stdout
    run_dir = glob.glob(str(tmp_path / 'out' / 'own' / 'video-focalnet_toy' / '*'))
    assert len(run_dir) == 1
    saved = torch.load(os.path.join(run_dir[0], 'last.pth'), map_location='cpu', weights_only=False)
    assert saved['model']['head.weight'].shape[0] == 2
    # best.pth is chosen on val.csv; the final test is pointed at the held-out test.csv prepare wrote
    import yaml
    with open(os.path.join(run_dir[0], 'config.yaml')) as f:
        assert yaml.safe_load(f)['DATA']['TEST_FILE'] == str(data / 'test.csv') and (data / 'test.csv').is_file()
FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for python: -c (the GPU count) answers as torch does, from CUDA_VISIBLE_DEVICES on an 8-GPU node;
# anything else (the launch itself) is recorded
if [ "$1" = "-c" ]; then
    if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
        IFS=, read -ra ids <<< "$CUDA_VISIBLE_DEVICES"; echo "${#ids[@]}"
    else
        echo 8
    fi
    exit 0
fi
printf '%s\n' "$@" > "$LAUNCHED"
"""

FAKE_NVIDIA_SMI = """#!/usr/bin/env bash
for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA H100 (UUID: GPU-$i)"; done
"""


def _launch_with_stubs(tmp_path, **variables):
    """Run scripts/launch.sh with a stub python (and an 8-GPU nvidia-smi on PATH); the launch's argv."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir(exist_ok=True)
    for name, text in (('python', FAKE_PYTHON), ('nvidia-smi', FAKE_NVIDIA_SMI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    launched = tmp_path / 'launched.txt'
    run_env = dict(env(), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=str(bin_dir / 'python'),
                   LAUNCHED=str(launched), **variables)
    run_env.pop('GPUS', None)
    if "CUDA_VISIBLE_DEVICES" not in variables:
        run_env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'launch.sh'), 'configs/toy/video-focalnet_toy.yaml'],
                          env=run_env, capture_output=True, text=True, timeout=60)
    return proc, (launched.read_text().split('\n')[:-1] if launched.exists() else [])


def test_launch_counts_the_gpus_torch_sees_and_uses_a_standalone_rendezvous(tmp_path):
    proc, argv = _launch_with_stubs(tmp_path, CUDA_VISIBLE_DEVICES='0,1')
    assert proc.returncode == 0, proc.stderr
    assert argv[:2] == ['-m', 'torch.distributed.run'], argv
    assert argv[argv.index('--nproc_per_node') + 1] == '2'      # not the 8 that nvidia-smi -L lists
    assert '--standalone' in argv                               # a free port per job, no fixed 29500
    assert '--master_port' not in argv and '29500' not in argv
    proc, argv = _launch_with_stubs(tmp_path, CUDA_VISIBLE_DEVICES='3')
    assert argv[:2] == ['main.py', '--cfg'], argv                 # one visible GPU: no launcher at all
    proc, argv = _launch_with_stubs(tmp_path)
    assert argv[argv.index('--nproc_per_node') + 1] == '8'


def test_launch_multi_node_needs_master_addr(tmp_path):
    proc, argv = _launch_with_stubs(tmp_path, NNODES='2', CUDA_VISIBLE_DEVICES='0,1')
    assert proc.returncode == 2 and argv == []
    assert proc.stderr.count('\n') == 1 and 'MASTER_ADDR' in proc.stderr
    proc, argv = _launch_with_stubs(tmp_path, NNODES='2', NODE_RANK='1', MASTER_ADDR='node0',
                                    CUDA_VISIBLE_DEVICES='0,1')
    assert proc.returncode == 0, proc.stderr
    assert argv[argv.index('--master_addr') + 1] == 'node0' and argv[argv.index('--node_rank') + 1] == '1'
    assert argv[argv.index('--nnodes') + 1] == '2' and argv[argv.index('--master_port') + 1] == '29500'


FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$LAUNCHED"
"""


@pytest.mark.parametrize('script, args, expected', [
    ('train.sbatch', ['configs/toy/video-focalnet_toy.yaml', '--opts', 'TRAIN.EPOCHS', '1'],
     ['main.py', '--cfg', 'configs/toy/video-focalnet_toy.yaml', '--opts', 'TRAIN.EPOCHS', '1']),
    ('eval.sbatch', ['configs/toy/video-focalnet_toy.yaml', 'ckpt.pth', '--opts', 'TEST.NUM_CLIP', '4'],
     ['main.py', '--cfg', 'configs/toy/video-focalnet_toy.yaml', '--eval', '--resume', 'ckpt.pth', '--opts',
      'TEST.NUM_CLIP', '4']),
])
def test_sbatch_scripts_start_main_through_srun(tmp_path, script, args, expected):
    path = os.path.join(REPO, 'scripts', 'slurm', script)
    options = re.findall(r'^#SBATCH (\S+)', open(path).read(), re.M)
    for needed in ('--nodes', '--gpus-per-node', '--ntasks-per-node', '--time'):
        assert any(o.startswith(needed + '=') for o in options), (script, needed)
    if script == 'train.sbatch':   # saves before the time limit and comes back by itself
        assert '--signal=USR1@120' in options and '--requeue' in options
    (tmp_path / 'srun').write_text(FAKE_SRUN)
    (tmp_path / 'srun').chmod(0o755)
    launched = tmp_path / 'launched.txt'
    run_env = dict(env(), PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", LAUNCHED=str(launched),
                   SLURM_SUBMIT_DIR=REPO, SLURM_JOB_ID='77', PYTHON='python')
    proc = subprocess.run(['bash', path, *args], cwd=str(tmp_path), env=run_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = launched.read_text().split('\n')[:-1]
    assert argv[0] == '--kill-on-bad-exit=1' and argv[1] == 'python' and argv[2:] == expected
    proc = subprocess.run(['bash', path], env=run_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and 'usage' in proc.stderr
