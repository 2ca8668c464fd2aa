"""A short real run of ``main.py`` on toy data through torchrun, and a process-group check.

1. toy videos (``datasets.ensure_toy_dataset``) in a temporary folder;
2. ``torchrun --standalone --nproc_per_node 1 main.py --cfg configs/toy/...`` for 2 epochs, with the run's
   AMP (fp16 with the grad scaler), pinned memory and loader workers; checked: exit code 0, ``last.pth``,
   two lines in ``metrics.jsonl``;
3. the same command with 3 epochs: it must auto-resume from ``last.pth`` and train only epoch 2;
4. ``--eval`` of ``last.pth`` with 4 clips x 3 crops: every validation video scored with 12 views;
5. with one process, main.py creates no process group (``utils/distributed.py`` only does so for
   WORLD_SIZE > 1), so NCCL (gloo on the CPU) is checked directly: a world-size-1 process group, an
   ``all_reduce`` and a DistributedDataParallel training step of a small Video-FocalNet.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

import torch

from .plan import Settings
from .report import one_line
from .runner import Channel

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY_CFG = os.path.join('configs', 'toy', 'video-focalnet_toy.yaml')
TAG = 'gpucheck'


class StepFailed(RuntimeError):
    """A main.py run did not do what it should; the message is the row's reason."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(st: Settings) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if st.quick:  # tiny CPU work: a second OpenMP thread only adds spin-waiting on a busy 2-core machine
        env['OMP_NUM_THREADS'] = '1'
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'PT_OUTPUT_DIR'):
        env.pop(k, None)
    return env


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if 'Error' in ln or 'error' in ln or 'stopping' in ln:
            return ln[-300:]
    return lines[-1][-300:] if lines else 'no output'


def _torchrun(st: Settings, args: List[str], deadline: float, what: str) -> str:
    """Run main.py through torchrun with ``args``; its output goes to the log and is returned."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1', 'main.py'] + args
    print(f'$ {" ".join(cmd)}', flush=True)
    timeout = max(deadline - time.monotonic(), 1.)
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(st), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or '')
        print(out, flush=True)
        raise StepFailed(f'{what}: still running when the section ran out of time ({timeout:.0f} s)')
    print(proc.stdout + proc.stderr, flush=True)
    if proc.returncode != 0:
        raise StepFailed(f'{what}: exit code {proc.returncode}: {_last_error(proc.stdout + proc.stderr)}')
    return proc.stdout + proc.stderr


def _metrics(run_dir: str) -> List[dict]:
    path = os.path.join(run_dir, 'metrics.jsonl')
    if not os.path.isfile(path):
        raise StepFailed(f'{path} was not written')
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _common_args(st: Settings, data: str, output: str) -> List[str]:
    return ['--cfg', TOY_CFG, '--output', output, '--opts',
            'DATA.ROOT', data, 'DATA.TRAIN_FILE', os.path.join(data, 'train.csv'),
            'DATA.VAL_FILE', os.path.join(data, 'val.csv'), 'DATA.LABEL_LIST', os.path.join(data, 'labels.csv'),
            'TRAIN.WARMUP_EPOCHS', '1', 'TRAIN.FINAL_TEST', 'False', 'SAVE_FREQ', '1', 'PRINT_FREQ', '2',
            'TEST.NUM_CLIP', '1', 'TEST.NUM_CROP', '1', *st.toy_opts]


def _train(st: Settings, common: List[str], run_dir: str, deadline: float, out: Channel) -> bool:
    start = time.monotonic()
    try:
        log = _torchrun(st, common[:2] + ['--tag', TAG] + common[2:] + ['TRAIN.EPOCHS', '2'], deadline, 'train')
        rows = _metrics(run_dir)
        if len(rows) != 2 or not os.path.isfile(os.path.join(run_dir, 'last.pth')):
            raise StepFailed(f'expected 2 epochs in metrics.jsonl and last.pth, got {len(rows)} epochs')
        device = 'cuda' if 'device cuda' in log else 'cpu' if 'device cpu' in log else 'unknown device'
        out.ok('toy.train', time.monotonic() - start,
               note=f"{device}; train loss {rows[-1].get('train_loss', float('nan')):.3f}, "
                    f"val top-1 {rows[-1].get('val_acc1', float('nan')):.1f}% after epoch 1")
    except Exception as e:
        out.failed('toy.train', one_line(e) if not isinstance(e, StepFailed) else str(e))
        return False
    start = time.monotonic()
    try:
        log = _torchrun(st, common[:2] + ['--tag', TAG] + common[2:] + ['TRAIN.EPOCHS', '3'], deadline, 'resume')
        rows = _metrics(run_dir)
        if 'resuming from' not in log or 'resumed: epoch 2' not in log:
            raise StepFailed("the 3-epoch run did not log 'resuming from ...' and 'resumed: epoch 2'")
        if [r.get('epoch') for r in rows] != [0, 1, 2]:
            raise StepFailed(f"metrics.jsonl epochs {[r.get('epoch') for r in rows]}, expected [0, 1, 2]")
        out.ok('toy.resume', time.monotonic() - start,
               note=f"resumed at epoch 2, trained 1 epoch; val top-1 {rows[-1].get('val_acc1', float('nan')):.1f}%")
    except Exception as e:
        out.failed('toy.resume', one_line(e) if not isinstance(e, StepFailed) else str(e))
    return True


def _evaluate(st: Settings, common: List[str], checkpoint: str, output: str, deadline: float, out: Channel) -> None:
    start = time.monotonic()
    try:
        _torchrun(st, common[:2] + ['--tag', f'{TAG}-eval', '--eval', '--resume', checkpoint] + common[2:]
                  + ['TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3'], deadline, 'eval')
        stem = os.path.splitext(os.path.basename(checkpoint))[0]  # --eval writes into <run>/eval/<stem>_<views>
        path = os.path.join(output, 'toy', 'video-focalnet_toy', f'{TAG}-eval', 'eval', f'{stem}_4x3',
                            'eval_results.json')
        with open(path) as f:
            res = json.load(f)
        if res.get('num_videos') != st.toy_val or res.get('num_views') != 12 or res.get('unreadable'):
            raise StepFailed(f"eval_results.json: {res.get('num_videos')} videos x {res.get('num_views')} views, "
                             f"unreadable {res.get('unreadable')}; expected {st.toy_val} x 12, none unreadable")
        out.ok('toy.eval', res['acc1'], note=f"{res['num_videos']} videos x {res['num_views']} views in "
               f'{time.monotonic() - start:.0f} s; top-5 {res.get("acc5", float("nan")):.1f}%')
    except Exception as e:
        out.failed('toy.eval', one_line(e) if not isinstance(e, StepFailed) else str(e))


def check_process_group(st: Settings, out: Channel) -> None:
    """World-size-1 process group on this device: all_reduce, then one DDP step of a small model."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from models import VideoFocalNet
    cuda = st.device == 'cuda'
    backend = 'nccl' if cuda else 'gloo'
    device = torch.device('cuda', 0) if cuda else torch.device('cpu')
    start = time.monotonic()
    try:
        kwargs = {'device_id': device} if cuda else {}
        dist.init_process_group(backend, init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0, world_size=1,
                                **kwargs)
        try:
            t = torch.arange(4., device=device)
            dist.all_reduce(t)
            if not torch.equal(t.cpu(), torch.arange(4.)):
                raise StepFailed(f'all_reduce over one rank changed the tensor: {t.tolist()}')
            model = VideoFocalNet(embed_dim=8, depths=(1, 1, 1, 1), num_classes=4, num_frames=4).to(device)
            ddp = DistributedDataParallel(model, device_ids=[0] if cuda else None)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
            x = torch.randn(2, 4, 3, 32, 32, device=device)
            loss = torch.nn.functional.cross_entropy(ddp(x), torch.tensor([0, 1], device=device))
            loss.backward()
            if not all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()):
                raise StepFailed('DDP step: a parameter has no or a non-finite gradient')
            opt.step()
        finally:
            dist.destroy_process_group()
        out.ok('dist.ddp', time.monotonic() - start, note=f'{backend}: all_reduce exact, DDP step with finite grads')
    except Exception as e:
        out.failed('dist.ddp', one_line(e) if not isinstance(e, StepFailed) else str(e))


def run(st: Settings, out: Channel, deadline: float, arg: str = '') -> None:
    """The ``toy`` section."""
    from datasets import ensure_toy_dataset

    work = tempfile.mkdtemp(prefix='gpu_check_toy_')
    try:
        data, output = os.path.join(work, 'data'), os.path.join(work, 'out')
        start = time.monotonic()
        ensure_toy_dataset(data, num_train=st.toy_train, num_val=st.toy_val, seed=0, num_frames=st.toy_frames,
                           size=st.toy_size, workers=min(8, os.cpu_count() or 1))
        out.ok('toy.data', time.monotonic() - start, note=f'{st.toy_frames} frames of {st.toy_size}^2 each')
        common = _common_args(st, data, output)
        run_dir = os.path.join(output, 'toy', 'video-focalnet_toy', TAG)
        trained: Optional[bool] = _train(st, common, run_dir, deadline, out)
        if trained:
            _evaluate(st, common, os.path.join(run_dir, 'last.pth'), output, deadline, out)
        else:
            out.failed('toy.eval', 'no checkpoint: the training run failed')
        check_process_group(st, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
