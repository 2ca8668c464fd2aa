"""Short real runs of ``main.py`` on toy data through torchrun, and a process-group check.

The ``toy`` section (one process, the run's AMP, pinned memory, loader workers):

1. toy videos (``datasets.ensure_toy_dataset``) in a temporary folder;
2. ``torchrun --standalone --nproc_per_node 1 main.py --cfg configs/toy/...`` for 2 epochs; checked: exit
   code 0, ``last.pth``, two lines in ``metrics.jsonl``;
3. the same command with 3 epochs: it must auto-resume from ``last.pth`` and train only epoch 2;
4. ``--eval`` of ``last.pth`` with 4 clips x 3 crops: every validation video scored with 12 views;
5. with one process, main.py creates no process group (``utils/distributed.py`` only does so for
   WORLD_SIZE > 1), so NCCL (gloo on the CPU) is checked directly: a world-size-1 process group, an
   ``all_reduce`` and a DistributedDataParallel training step of a small Video-FocalNet.

The ``ddp`` section: steps 2-4 with 2 ranks, ``--use-checkpoint --accumulation-steps 2`` (the memory-saving
combination recommended with fewer GPUs: DDP, ``no_sync`` micro-batches and checkpointed blocks together)
and a 2-rank 4x3 evaluation. On one GPU both ranks share it: NCCL refuses two ranks on one device, so
``two_ranks_one_device.py`` starts main.py with gloo (which all-reduces CUDA tensors) and LOCAL_RANK 0 for
both; on the CPU it is gloo anyway.

A step still running when the section's time is up is stopped with its workers: torchrun gets SIGTERM (it
stops its workers, which it starts in sessions of their own), then its process group and any worker left
get SIGKILL, so that no worker keeps the GPU for the sections after it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
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


def _descendants(pid: int) -> List[int]:
    """Every live process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict = {}
    try:
        entries = os.listdir('/proc')
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_launcher(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a torchrun started with ``start_new_session=True`` and every worker it started.

    SIGTERM first: torchrun forwards it to its workers (each in a session of its own, so a signal to
    torchrun's process group would miss them) and waits for them. Whatever is left after ``grace`` seconds,
    torchrun's process group and the workers found under it before the SIGTERM, gets SIGKILL."""
    workers = _descendants(proc.pid)
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def _torchrun(st: Settings, args: List[str], deadline: float, what: str, nproc: int = 1,
              one_device: bool = True) -> str:
    """Run main.py through torchrun with ``args``; its output goes to the log and is returned. With 2 ranks
    both run on the one device (``two_ranks_one_device.py``) unless ``one_device`` is False (one GPU each)."""
    script = ['main.py'] if nproc == 1 or not one_device else ['-m', 'benchmarks.gpucheck.two_ranks_one_device']
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc)] + \
        script + args
    print(f'$ {" ".join(cmd)}', flush=True)
    timeout = max(deadline - time.monotonic(), 1.)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(st), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_launcher(proc)
        output, _ = proc.communicate()
        print(output, flush=True)
        raise StepFailed(f'{what}: still running when the section ran out of time ({timeout:.0f} s); '
                         'torchrun and its workers were stopped')
    finally:
        if proc.poll() is None:  # the section itself is being stopped (an exception, a signal)
            stop_launcher(proc, grace=5.0)
    print(output, flush=True)
    if proc.returncode != 0:
        raise StepFailed(f'{what}: exit code {proc.returncode}: {_last_error(output)}')
    return output


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


def _step_failed(out: Channel, key: str, e: Exception) -> None:
    out.failed(key, str(e) if isinstance(e, StepFailed) else one_line(e))


def _train(st: Settings, common: List[str], run_dir: str, deadline: float, out: Channel, prefix: str = 'toy',
           nproc: int = 1, one_device: bool = True) -> bool:
    start = time.monotonic()
    try:
        log = _torchrun(st, common[:2] + ['--tag', TAG] + common[2:] + ['TRAIN.EPOCHS', '2'], deadline, 'train',
                        nproc, one_device)
        rows = _metrics(run_dir)
        if len(rows) != 2 or not os.path.isfile(os.path.join(run_dir, 'last.pth')):
            raise StepFailed(f'expected 2 epochs in metrics.jsonl and last.pth, got {len(rows)} epochs')
        device = 'cuda' if 'device cuda' in log else 'cpu' if 'device cpu' in log else 'unknown device'
        out.ok(f'{prefix}.train', time.monotonic() - start,
               note=f"{device}{f', {nproc} ranks' if nproc > 1 else ''}; train loss "
                    f"{rows[-1].get('train_loss', float('nan')):.3f}, "
                    f"val top-1 {rows[-1].get('val_acc1', float('nan')):.1f}% after epoch 1")
    except Exception as e:
        _step_failed(out, f'{prefix}.train', e)
        return False
    start = time.monotonic()
    try:
        log = _torchrun(st, common[:2] + ['--tag', TAG] + common[2:] + ['TRAIN.EPOCHS', '3'], deadline, 'resume',
                        nproc, one_device)
        rows = _metrics(run_dir)
        if 'resuming from' not in log or 'resumed: epoch 2' not in log:
            raise StepFailed("the 3-epoch run did not log 'resuming from ...' and 'resumed: epoch 2'")
        if [r.get('epoch') for r in rows] != [0, 1, 2]:
            raise StepFailed(f"metrics.jsonl epochs {[r.get('epoch') for r in rows]}, expected [0, 1, 2]")
        out.ok(f'{prefix}.resume', time.monotonic() - start,
               note=f"resumed at epoch 2, trained 1 epoch; val top-1 {rows[-1].get('val_acc1', float('nan')):.1f}%")
    except Exception as e:
        _step_failed(out, f'{prefix}.resume', e)
    return True


def _evaluate(st: Settings, common: List[str], checkpoint: str, output: str, deadline: float, out: Channel,
              prefix: str = 'toy', nproc: int = 1, one_device: bool = True) -> None:
    start = time.monotonic()
    try:
        log = _torchrun(st, common[:2] + ['--tag', f'{TAG}-eval', '--eval', '--resume', checkpoint] + common[2:]
                        + ['TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3'], deadline, 'eval', nproc, one_device)
        res = _eval_results(output, log)
        if res.get('num_videos') != st.toy_val or res.get('num_views') != 12 or res.get('unreadable'):
            raise StepFailed(f"eval_results.json: {res.get('num_videos')} videos x {res.get('num_views')} views, "
                             f"unreadable {res.get('unreadable')}; expected {st.toy_val} x 12, none unreadable")
        out.ok(f'{prefix}.eval', res['acc1'], note=f"{res['num_videos']} videos x {res['num_views']} views in "
               f'{time.monotonic() - start:.0f} s; top-5 {res.get("acc5", float("nan")):.1f}%')
    except Exception as e:
        _step_failed(out, f'{prefix}.eval', e)


def _eval_results(output: str, log: str) -> dict:
    """``eval_results.json`` of the evaluation just run: the newest one under ``output``."""
    found = []
    for folder, _, files in os.walk(output):
        if 'eval_results.json' in files:
            path = os.path.join(folder, 'eval_results.json')
            found.append((os.path.getmtime(path), path))
    if not found:
        raise StepFailed(f'no eval_results.json under {output}: {_last_error(log)}')
    with open(max(found)[1]) as f:
        return json.load(f)


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


def _toy_folders(st: Settings, work: str, out: Channel, prefix: str) -> tuple:
    from datasets import ensure_toy_dataset
    data, output = os.path.join(work, 'data'), os.path.join(work, 'out')
    start = time.monotonic()
    ensure_toy_dataset(data, num_train=st.toy_train, num_val=st.toy_val, seed=0, num_frames=st.toy_frames,
                       size=st.toy_size, workers=min(8, os.cpu_count() or 1))
    if prefix == 'toy':
        out.ok('toy.data', time.monotonic() - start, note=f'{st.toy_frames} frames of {st.toy_size}^2 each')
    return data, output, os.path.join(output, 'toy', 'video-focalnet_toy', TAG)


def run(st: Settings, out: Channel, deadline: float, arg: str = '') -> None:
    """The ``toy`` section."""
    work = tempfile.mkdtemp(prefix='gpu_check_toy_')
    try:
        data, output, run_dir = _toy_folders(st, work, out, 'toy')
        common = _common_args(st, data, output)
        trained: Optional[bool] = _train(st, common, run_dir, deadline, out)
        if trained:
            _evaluate(st, common, os.path.join(run_dir, 'last.pth'), output, deadline, out)
        else:
            out.failed('toy.eval', 'no checkpoint: the training run failed')
        check_process_group(st, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_two_ranks(st: Settings, out: Channel, deadline: float, arg: str = '', prefix: str = 'ddp',
                  one_device: bool = True) -> None:
    """The ``ddp`` section: 2 ranks on one device, checkpointing + accumulation, resume, 4x3 evaluation."""
    work = tempfile.mkdtemp(prefix=f'gpu_check_{prefix}_')
    try:
        data, output, run_dir = _toy_folders(st, work, out, prefix)
        common = _common_args(st, data, output)
        # 2 x 2 micro-batches of half the batch: the same clips per update as the 1-process run
        half = str(max(1, int(dict(zip(st.toy_opts[::2], st.toy_opts[1::2])).get('DATA.BATCH_SIZE', '4')) // 4))
        common = common[:2] + ['--use-checkpoint', '--accumulation-steps', '2'] + common[2:] + \
            ['DATA.BATCH_SIZE', half]
        if _train(st, common, run_dir, deadline, out, prefix=prefix, nproc=2, one_device=one_device):
            _evaluate(st, common, os.path.join(run_dir, 'last.pth'), output, deadline, out, prefix=prefix, nproc=2,
                      one_device=one_device)
        else:
            out.failed(f'{prefix}.eval', 'no checkpoint: the training run failed')
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_two_gpus(st: Settings, out: Channel, deadline: float, arg: str = '') -> None:
    """The ``ddp2`` section (two or more GPUs visible): main.py on 2 GPUs, one rank each, over NCCL, as a
    multi-GPU job runs: checkpointing + accumulation, resume, 4x3 evaluation."""
    run_two_ranks(st, out, deadline, arg, prefix='ddp2', one_device=False)
