"""The fp16 path end to end on the CPU, so that a GPU run is not its first execution: autocast fp16 with the
GradScaler through main.py, a step with an inf gradient skipped by the scaler without stopping the run, the
scaler's state saved at a preemption and restored by the resumed run, which ends bit-identical to an
uninterrupted one."""
import os
import subprocess
import sys

import pytest
import torch

from engine_helpers import REPO, TOY_CFG, env, make_tiny_data, run_folder, tiny_opts

pytestmark = pytest.mark.slow

# main.py with two test hooks around Trainer.unscale_and_clip: at global step INF_STEP one gradient becomes inf
# (the loss stays finite, as with an fp16 overflow in the backward pass); at TERM_STEP the process sends
# itself SIGTERM, the preemption a cluster sends.
RUNNER = '''
import os, signal, sys
sys.path.insert(0, {repo!r})
import engine.trainer as trainer
inf_step, term_step = int(os.environ['INF_STEP']), int(os.environ.get('TERM_STEP', -1))
original = trainer.Trainer.unscale_and_clip

def unscale_and_clip(self, global_step):
    if global_step == inf_step:
        next(p for p in self.model.parameters() if p.grad is not None).grad.view(-1)[0] = float('inf')
    if global_step == term_step:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(self, global_step)

trainer.Trainer.unscale_and_clip = unscale_and_clip
os.chdir({repo!r})
import main
sys.exit(main.main(sys.argv[1:]))
'''


def _run(tmp_path, data, tag, **hooks):
    runner = tmp_path / 'runner.py'
    runner.write_text(RUNNER.format(repo=REPO))
    args = ['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', tag, '--opts',
            *tiny_opts(data, TRAIN__AMP='fp16', TRAIN__EPOCHS=2)]
    proc = subprocess.run([sys.executable, str(runner), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=400, env=dict(env(), **{k: str(v) for k, v in hooks.items()}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = run_folder(str(tmp_path / 'out'), tag)
    return proc, folder, torch.load(os.path.join(folder, 'last.pth'), weights_only=True)


def test_fp16_skips_an_inf_step_saves_the_scaler_and_resumes_exactly(tmp_path):
    data = make_tiny_data(str(tmp_path / 'data'))
    _, _, clean = _run(tmp_path, data, 'clean', INF_STEP=-1)
    _, folder, reference = _run(tmp_path, data, 'whole', INF_STEP=1)
    log = open(os.path.join(folder, 'log_rank0.txt')).read()
    assert 'Train: [1/2][4/4]' in log                                  # the inf step did not stop the run
    assert reference['scaler']['scale'] == clean['scaler']['scale'] / 2  # halved once more, by the skipped step
    assert any(not torch.equal(clean['model'][k], reference['model'][k]) for k in clean['model'])
    assert all(torch.isfinite(t).all() for t in reference['model'].values())
    first_epoch = [line for line in log.splitlines() if 'Train: [0/2][2/4]' in line][0]
    assert 'grad_norm' in first_epoch and 'nan' not in first_epoch and 'inf' not in first_epoch  # not averaged in

    proc, folder, saved = _run(tmp_path, data, 'preempted', INF_STEP=1, TERM_STEP=5)
    assert 'SIGTERM received' in proc.stdout + proc.stderr
    assert (saved['epoch'], saved['epoch_step']) == (0, 2)            # epoch 1, after its 2nd update
    assert saved['scaler']['scale'] <= reference['scaler']['scale'] * 2  # the scaler's state is in the checkpoint
    assert saved['scaler']['scale'] < 2.0 ** 16                         # (the skipped step halved it already)
    proc, folder, resumed = _run(tmp_path, data, 'preempted', INF_STEP=1)
    assert 'resuming from' in proc.stdout
    assert resumed['scaler'] == reference['scaler']                     # restored, not a fresh 65536
    for key, value in reference['model'].items():
        assert torch.equal(value, resumed['model'][key]), key
