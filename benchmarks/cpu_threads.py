"""Per-step time of a short toy training on CPU with PyTorch's default threads and with the policy of
``utils/threads.py``, on a quiet machine and beside a competing 2-thread CPU job.

    python -m benchmarks.cpu_threads                 # 30 measured steps per case (after 3 warm-up steps)
    python -m benchmarks.cpu_threads --steps 60 --json cpu_threads.json

Each case runs in a fresh process (OpenMP reads its environment once): the toy config's model (``configs/toy``),
AdamW, one synthetic batch of the toy's shape (8 clips of 8 frames at 64 px) trained for ``--steps`` updates,
so only the compute threads differ, not the decoding. The cases:

* ``default``: what a CPU run got before the policy: torch's default thread count, OMP_WAIT_POLICY unset;
* ``policy``: ``utils.threads.cpu_thread_plan`` for the toy config (its 2 loader workers counted) and
  ``OMP_WAIT_POLICY=PASSIVE``, as ``main.py`` sets them.

``busy`` starts a competing job first (2 threads of float32 matrix products in another process, as another
user's job or a second run would). Per-step times are medians; the ratio is default / policy (above 1: the
policy is faster). Figures depend on the machine and on what else runs on it: quote them with both.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CFG = os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml')
COMPETITOR = ('import torch\ntorch.set_num_threads(2)\na = torch.randn(768, 768)\n'
              'while True:\n    a = torch.tanh(a @ a)\n')


def train_steps(steps: int, warmup: int, threads: Optional[int]) -> Dict[str, object]:
    """In this process: the toy model trained on one synthetic batch; seconds per update."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    from engine.config import load_config
    from models import build_model
    config = load_config(TOY_CFG)
    torch.manual_seed(0)
    model = build_model(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.TRAIN.BASE_LR)
    size, frames = config.DATA.INPUT_SIZE, config.DATA.NUM_FRAMES
    clips = torch.randn(config.DATA.BATCH_SIZE, frames, 3, size, size)
    labels = torch.randint(0, config.MODEL.NUM_CLASSES, (config.DATA.BATCH_SIZE,))
    times: List[float] = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return {'threads': torch.get_num_threads(), 'median_s': statistics.median(times), 'steps': len(times),
            'wait_policy': os.environ.get('OMP_WAIT_POLICY', 'unset')}


def case_env(policy: str) -> Dict[str, str]:
    """The environment of one case: the user's thread settings removed, the policy's added."""
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY')}
    if policy == 'policy':
        env['OMP_WAIT_POLICY'] = 'PASSIVE'
    return env


def policy_threads() -> int:
    from engine.config import load_config
    from utils.env import local_process_count
    from utils.threads import cpu_thread_plan
    config = load_config(TOY_CFG)
    threads, _ = cpu_thread_plan(0, config.DATA.NUM_WORKERS, local_process_count(), environ={})
    return int(threads)


def run_case(policy: str, busy: bool, steps: int, warmup: int) -> Dict[str, object]:
    competitor = None
    if busy:
        competitor = subprocess.Popen([sys.executable, '-c', COMPETITOR], env=case_env('default'),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # its pool running before the measured process starts
    try:
        command = [sys.executable, '-m', 'benchmarks.cpu_threads', '--worker', '--steps', str(steps),
                   '--warmup', str(warmup)]
        if policy == 'policy':
            command += ['--threads', str(policy_threads())]
        out = subprocess.run(command, cwd=REPO, env=case_env(policy), capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser('python -m benchmarks.cpu_threads', description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=30, help='measured updates per case')
    parser.add_argument('--warmup', type=int, default=3, help='updates before measuring')
    parser.add_argument('--json', metavar='FILE', help='also write the figures as JSON')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--threads', type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(train_steps(args.steps, args.warmup, args.threads)))
        return 0
    results: Dict[str, Dict[str, object]] = {}
    load_before = os.getloadavg()[0]
    for load in ('quiet', 'busy'):
        for policy in ('default', 'policy'):
            results[f'{policy}/{load}'] = run_case(policy, load == 'busy', args.steps, args.warmup)
            r = results[f'{policy}/{load}']
            print(f'  {policy:8s} {load:6s} threads {r["threads"]}, OMP_WAIT_POLICY {r["wait_policy"]}: '
                  f'{r["median_s"]:.3f} s/step', flush=True)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    print(f'\ntoy training step (batch 8 x 8 frames x 64 px), median of {args.steps} steps, {cpus} usable CPUs, '
          f'load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}')
    print(f'{"":8s} {"default (s/step)":>17s} {"policy (s/step)":>16s} {"default/policy":>15s}')
    for load in ('quiet', 'busy'):
        old, new = results[f'default/{load}']['median_s'], results[f'policy/{load}']['median_s']
        print(f'{load:8s} {old:17.3f} {new:16.3f} {old / new:14.2f}x')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
