"""Shared by the end-to-end engine tests: a tiny toy dataset, tiny-model options and subprocess runs of main.py."""
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CFG = os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml')


def make_tiny_data(root: str, num_train: int = 16, num_val: int = 7) -> str:
    from datasets import ensure_toy_dataset
    return ensure_toy_dataset(root, num_train=num_train, num_val=num_val, seed=0)


def tiny_opts(data: str, **overrides) -> List[str]:
    """--opts list for a tiny, fast, deterministic run on the toy data in ``data``."""
    opts: Dict[str, object] = {
        'DATA.ROOT': data, 'DATA.TRAIN_FILE': os.path.join(data, 'train.csv'),
        'DATA.VAL_FILE': os.path.join(data, 'val.csv'), 'DATA.TEST_FILE': os.path.join(data, 'test.csv'),
        'DATA.LABEL_LIST': os.path.join(data, 'labels.csv'),
        'DATA.NUM_FRAMES': 4, 'DATA.IMG_SIZE': 32, 'DATA.INPUT_SIZE': 32, 'DATA.NUM_WORKERS': 0,
        'DATA.BATCH_SIZE': 4, 'MODEL.FOCAL.EMBED_DIM': 8, 'MODEL.FOCAL.DEPTHS': '[1,1,1,1]',
        'MODEL.DROP_PATH_RATE': 0.0, 'TRAIN.EPOCHS': 2, 'TRAIN.WARMUP_EPOCHS': 1, 'TRAIN.LR_SCALING': False,
        'TRAIN.FINAL_TEST': False, 'TENSORBOARD': False, 'PRINT_FREQ': 1, 'SAVE_FREQ': 1,
        'TEST.BATCH_SIZE': 2, 'AUG.COLOR_JITTER': 0.5, 'AUG.GRAY_SCALE': 0.2,
        # pinned, so that tuning the toy recipe does not change what these tests run
        'MODEL.TUBELET_SIZE': 1, 'MODEL.FOCAL.MLP_RATIO': 4.0, 'MODEL.INIT': 'original', 'TRAIN.BASE_LR': 2e-3,
        'TRAIN.WEIGHT_DECAY': 0.05, 'TRAIN.OPTIMIZER.NAME': 'adamw', 'TEST.NUM_CLIP': 1, 'TEST.NUM_CROP': 1,
    }
    opts.update({k.replace('__', '.'): v for k, v in overrides.items()})
    out: List[str] = []
    for k, v in opts.items():
        out += [k, str(v)]
    return out


def env() -> Dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    e.pop('PT_OUTPUT_DIR', None)
    # SLURM_STEP_ID too: pytest run by srun must not make each main.py of a test an srun task of one run
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_STEP_ID'):
        e.pop(k, None)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main_cmd(args: List[str], nproc: int = 1) -> List[str]:
    if nproc == 1:
        return [sys.executable, 'main.py'] + args
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--master_addr',
            '127.0.0.1', '--master_port', str(free_port()), 'main.py'] + args


def run_main(args: List[str], nproc: int = 1, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(main_cmd(args, nproc), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'main.py exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n'
                             f'--- stderr\n{proc.stderr[-4000:]}')
    return proc


def run_and_signal(args: List[str], log_file: str, marker: str, sig: int, timeout: float = 240):
    """Start main.py, send ``sig`` once ``marker`` appears in ``log_file``; returns (returncode, output)."""
    proc = subprocess.Popen(main_cmd(args), cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + timeout
    sent = False
    try:
        while proc.poll() is None and time.time() < deadline:
            if os.path.exists(log_file) and marker in open(log_file).read():
                proc.send_signal(sig)
                sent = True
                break
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sent, f'{marker!r} never appeared in {log_file}:\n{out[-3000:] if out else ""}'
    return proc.returncode, out


def start_ranks(per_rank_args: List[List[str]], extra_env: Optional[Dict[str, str]] = None) -> List[subprocess.Popen]:
    """Start one main.py per rank with torchrun's variables set by hand (gloo on 127.0.0.1), so that each rank
    can get its own arguments (e.g. another --output, as on nodes that share no folder) and its own signal."""
    port, world = free_port(), len(per_rank_args)
    procs = []
    for rank, args in enumerate(per_rank_args):
        e = dict(env(), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                 MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), **(extra_env or {}))
        procs.append(subprocess.Popen([sys.executable, 'main.py'] + args, cwd=REPO, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait_ranks(procs: List[subprocess.Popen], timeout: float = 240) -> List[tuple]:
    """[(returncode, output)] of every rank; all are killed if one is still running at ``timeout``."""
    deadline, results = time.time() + timeout, []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.time()))
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def run_ranks(per_rank_args: List[List[str]], timeout: float = 240, check: bool = True) -> List[tuple]:
    results = wait_ranks(start_ranks(per_rank_args), timeout)
    if check and any(code != 0 for code, _ in results):
        raise AssertionError('\n'.join(f'--- rank {r} exited with {code}\n{out[-3000:]}'
                                        for r, (code, out) in enumerate(results)))
    return results


def signal_ranks_when(per_rank_args: List[List[str]], log_file: str, marker: str, sig: int,
                      timeout: float = 240) -> List[tuple]:
    """Start the ranks and send ``sig`` to every one of them once ``marker`` appears in ``log_file``."""
    procs = start_ranks(per_rank_args)
    deadline = time.time() + timeout
    sent = False
    while not sent and all(p.poll() is None for p in procs) and time.time() < deadline:
        if os.path.exists(log_file) and marker in open(log_file).read():
            for proc in procs:
                proc.send_signal(sig)
            sent = True
        time.sleep(0.02)
    results = wait_ranks(procs, max(1.0, deadline - time.time()))
    assert sent, f'{marker!r} never appeared in {log_file}:\n{results[0][1][-3000:]}'
    return results


def run_folder(output_root: str, tag: str) -> str:
    return os.path.join(output_root, 'toy', 'video-focalnet_toy', tag)


def model_tensors(path: str) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location='cpu', weights_only=True)['model']


def max_abs_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


KILL = signal.SIGKILL
TERM = signal.SIGTERM
