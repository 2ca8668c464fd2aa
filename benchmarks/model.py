"""Speed and memory of Video-FocalNet (``models/``) against the reference implementation and other video models.

    python -m benchmarks.model                       # Video-FocalNet-T, batch 2, 8 frames, CPU, fp32
    python -m benchmarks.model --model base --device cuda --amp bf16 --compile
    python -m benchmarks.model --threads 1 --clock cpu   # on a shared machine: CPU time, immune to neighbours

Measured side by side in one process, interleaved repetition by repetition (so that load from other
processes hits every variant alike), median over ``--reps`` after ``--warmup`` runs:

* the reference implementation in ``benchmarks/reference_video_focalnet.py`` (the original's order of operations,
  section 1.6 of the spec) and ``models/``: inference time (eval, no grad), training-step time (forward,
  cross-entropy backward, SGD step) and peak memory of a training step;
* ``models/`` with gradient checkpointing (training step time and peak memory);
* torchvision's ``swin3d_t`` at 32 frames and ``mvit_v2_s`` at 16 frames (their published Kinetics-400 test
  protocols), random init, inference time (``--skip-baselines`` leaves them out).

Peak memory of a training step: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated
before the step. On CPU there is no allocator counter, so each model's memory is measured in a child process
(Linux only) that fixes glibc's mmap threshold at 64 KiB (``mallopt``), so that every tensor larger than that
is its own mapping, returned to the OS when freed; it resets the process's peak resident size
(``/proc/self/clear_refs``) before a step and reports ``VmHWM`` after it minus ``VmRSS`` before it (median of
3 steps after 1 warm-up). Timings are taken in the parent with the default allocator, because fresh
mappings for every tensor would slow allocation-heavy code down. Gradients are set to None before each step,
so the figure includes the gradient tensors, the activations kept for backward and the optimizer's
transients; optimizer state exists already (warm-up).

The last lines are a Markdown table (copied into docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.reference_video_focalnet import ReferenceVideoFocalNet
from models import VideoFocalNet
from models.registry import ARCHITECTURES

NUM_CLASSES = 400
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- memory -------------------------------------------------------------------------------------------------

def _configure_cpu_allocator() -> bool:
    """Make freed tensors go back to the OS at once, so that peak RSS tracks live tensor memory."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 64 * 1024) == 1 and libc.mallopt(m_trim_threshold, 128 * 1024) == 1
        return ok and os.path.exists('/proc/self/clear_refs')
    except OSError:
        return False


def _proc_status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


class PeakMemory:
    """Peak memory (bytes) of the code run inside ``with PeakMemory(device) as m:``: ``m.peak`` over what was
    allocated before (weights, optimizer state, inputs), ``m.absolute`` the whole peak (what must fit)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: Optional[int] = None
        self.absolute: Optional[int] = None

    def __enter__(self) -> 'PeakMemory':
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset VmHWM to the current RSS
            self._start = _proc_status_kb('VmRSS') * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            self.absolute = torch.cuda.max_memory_allocated()
        else:
            self.absolute = _proc_status_kb('VmHWM') * 1024
        self.peak = self.absolute - self._start


# --- contention ---------------------------------------------------------------------------------------------

class OtherLoad:
    """Fraction of the machine's CPU time used by *other* processes while the ``with`` block ran (Linux).

    The benchmark repeats a timed run when this exceeds ``--max-other-load``: on a shared machine a single
    busy neighbour can stretch a multi-threaded step several-fold.
    """

    TICKS = os.sysconf('SC_CLK_TCK') if hasattr(os, 'sysconf') else 100

    @staticmethod
    def _busy_ticks() -> int:
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields) - fields[3] - fields[4]  # minus idle and iowait

    @staticmethod
    def _own_ticks() -> int:
        with open('/proc/self/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime of all threads

    def __enter__(self) -> 'OtherLoad':
        self.fraction = 0.
        self._available = os.path.exists('/proc/stat')
        if self._available:
            self._start = (time.perf_counter(), self._busy_ticks(), self._own_ticks())
        return self

    def __exit__(self, *exc) -> None:
        if self._available:
            wall = time.perf_counter() - self._start[0]
            others = (self._busy_ticks() - self._start[1]) - (self._own_ticks() - self._start[2])
            self.fraction = max(0., others / self.TICKS) / (wall * (os.cpu_count() or 1))


# --- models -------------------------------------------------------------------------------------------------

def _focalnet_kwargs(args: argparse.Namespace) -> dict:
    kwargs = dict(ARCHITECTURES[f'video_focalnet_{args.model}'], num_classes=NUM_CLASSES, num_frames=args.frames,
                  img_size=args.size, drop_path_rate=0.)
    if args.embed_dim:
        kwargs['embed_dim'] = args.embed_dim
    if args.depths:
        kwargs['depths'] = args.depths
    return kwargs


class _ChannelsFirstVideo(nn.Module):
    """torchvision video models take (B, C, T, H, W); the benchmark feeds (B, T, C, H, W) to every model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.transpose(1, 2))


class Case:
    """One model variant to measure."""

    def __init__(self, name: str, build: Callable[[], nn.Module], frames: int, train: bool = True,
                 grad_checkpointing: bool = False) -> None:
        self.name = name
        self.build = build
        self.frames = frames
        self.train = train
        self.grad_checkpointing = grad_checkpointing
        self.times: Dict[str, List[float]] = {'infer': [], 'train': []}
        self.peak: List[int] = []
        self.retries = 0    # timed runs repeated because other processes loaded the CPU
        self.contended = 0  # timed runs kept although still contended after --max-retries


def _prepare(case: Case, args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    model = case.build().to(device)
    if case.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, case.frames, 3, args.size, args.size, device=device)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    return model, runner, opt, x, y


def _autocast(args: argparse.Namespace, device: torch.device):
    if args.amp == 'bf16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _clock(args: argparse.Namespace) -> Callable[[], float]:
    return time.process_time if args.clock == 'cpu' else time.perf_counter


def _infer(model, runner, x, args, device) -> float:
    model.eval()
    _sync(device)
    start = _clock(args)()
    with torch.no_grad(), _autocast(args, device):
        runner(x)
    _sync(device)
    return _clock(args)() - start


def _train_step(model, runner, opt, x, y, args, device) -> float:
    model.train()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    start = _clock(args)()
    with _autocast(args, device):
        loss = F.cross_entropy(runner(x).float(), y)
    loss.backward()
    opt.step()
    _sync(device)
    return _clock(args)() - start


def _cases(args: argparse.Namespace) -> List[Case]:
    kw = _focalnet_kwargs(args)
    cases = [
        Case('reference', lambda: ReferenceVideoFocalNet(**kw), args.frames),
        Case('ours', lambda: VideoFocalNet(**kw), args.frames),
        Case('ours + grad checkpointing', lambda: VideoFocalNet(**kw), args.frames, grad_checkpointing=True),
    ]
    cases[2].times['infer'] = None  # same inference as 'ours'
    if not args.skip_baselines:
        import torchvision.models.video as tvv
        cases.append(Case('swin3d_t @32 frames', lambda: _ChannelsFirstVideo(tvv.swin3d_t(num_classes=NUM_CLASSES)),
                          32, train=False))
        cases.append(Case('mvit_v2_s @16 frames', lambda: _ChannelsFirstVideo(tvv.mvit_v2_s(num_classes=NUM_CLASSES)),
                          16, train=False))
    return cases


def _measure_memory(case: Case, args: argparse.Namespace, device: torch.device, steps: int = 3) -> List[int]:
    model, runner, opt, x, y = _prepare(case, args, device)
    _train_step(model, runner, opt, x, y, args, device)
    peaks = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with PeakMemory(device) as mem:
            _train_step(model, runner, opt, x, y, args, device)
        peaks.append(mem.peak)
    return peaks


def _memory_in_child(case: Case, argv: List[str]) -> List[int]:
    """CPU: measure in a fresh process with the mmap-everything allocator setting (see module docstring)."""
    # as a module from the repository root: run as a file, the child would not find the ``benchmarks`` package
    cmd = [sys.executable, '-m', 'benchmarks.model', *argv, '--memory-case', case.name]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f'memory measurement of {case.name} failed:\n{out.stderr[-3000:]}')
    line = next(line for line in out.stdout.splitlines() if line.startswith('PEAK '))
    return [int(v) for v in line.split()[1:]]


def _timed(fn: Callable[[], float], args: argparse.Namespace, device: torch.device, case: Case) -> float:
    """Run ``fn`` (which returns its own duration); repeat while other processes loaded the CPU."""
    for _ in range(args.max_retries + 1):
        with OtherLoad() as load:
            seconds = fn()
        if device.type != 'cpu' or args.clock == 'cpu' or load.fraction <= args.max_other_load:
            return seconds
        case.retries += 1
    case.contended += 1
    return seconds


def run(args: argparse.Namespace, argv: List[str]) -> List[Case]:
    device = torch.device(args.device)
    cases = _cases(args)
    for case in cases:
        if case.train and not args.skip_memory:
            print(f'peak memory of {case.name} ...', flush=True)
            case.peak = (_memory_in_child(case, argv) if device.type == 'cpu'
                         else _measure_memory(case, args, device))
    state = {}
    for case in cases:
        print(f'building {case.name} ...', flush=True)
        state[case.name] = _prepare(case, args, device)
        model, runner, opt, x, y = state[case.name]
        for _ in range(args.warmup):
            if case.times['infer'] is not None:
                _infer(model, runner, x, args, device)
            if case.train:
                _train_step(model, runner, opt, x, y, args, device)
    for rep in range(args.reps):
        for case in cases:
            model, runner, opt, x, y = state[case.name]
            if case.times['infer'] is not None:
                case.times['infer'].append(_timed(lambda: _infer(model, runner, x, args, device), args, device, case))
            if case.train:
                case.times['train'].append(_timed(lambda: _train_step(model, runner, opt, x, y, args, device),
                                                  args, device, case))
        print(f'repetition {rep + 1}/{args.reps}: ' + ', '.join(
            f"{c.name} {c.times['infer'][-1] if c.times['infer'] else float('nan'):.3f}s"
            + (f"/{c.times['train'][-1]:.3f}s" if c.train else '') for c in cases), flush=True)
    return cases


def _median(values) -> Optional[float]:
    return statistics.median(values) if values else None


def table(cases: List[Case], args: argparse.Namespace) -> str:
    by = {c.name: c for c in cases}
    ref, ours, ckpt = by['reference'], by['ours'], by['ours + grad checkpointing']

    def t(case, kind):
        return _median(case.times[kind] or [])

    def mib(case):
        return _median(case.peak) / 2 ** 20 if case.peak else float('nan')

    rows = ['| measurement | reference | ours | ours / reference |', '|---|---:|---:|---:|']
    ri, oi = t(ref, 'infer'), t(ours, 'infer')
    rt, ot = t(ref, 'train'), t(ours, 'train')
    rows.append(f'| inference, s per batch | {ri:.3f} | {oi:.3f} | {ri / oi:.2f}x faster |')
    rows.append(f'| training step, s | {rt:.3f} | {ot:.3f} | {rt / ot:.2f}x faster |')
    rows.append(f'| training peak memory, MiB | {mib(ref):.0f} | {mib(ours):.0f} | {mib(ours) / mib(ref):.2f}x |')
    ct = t(ckpt, 'train')
    rows.append(f'| ours + grad checkpointing: training step, s | | {ct:.3f} | {ct / ot - 1:+.0%} time vs ours |')
    rows.append(f'| ours + grad checkpointing: peak memory, MiB | | {mib(ckpt):.0f} | '
                f'{1 - mib(ckpt) / mib(ours):.0%} less than ours |')
    for name in ('swin3d_t @32 frames', 'mvit_v2_s @16 frames'):
        if name in by:
            bi = t(by[name], 'infer')
            rows.append(f'| {name}: inference, s per batch | | {bi:.3f} | ours {bi / oi:.2f}x faster |')
    return '\n'.join(rows)


def _machine(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    name = platform.processor() or 'CPU'
    try:
        with open('/proc/cpuinfo') as f:
            name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f'{name}, {threads} thread{"s" if threads != 1 else ""}'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description='Video-FocalNet speed/memory benchmark (see module docstring).')
    p.add_argument('--model', choices=['tiny', 'small', 'base'], default='tiny')
    p.add_argument('--embed-dim', type=int, help="override the model's width (e.g. 8 for a smoke run)")
    p.add_argument('--depths', type=int, nargs=4, metavar='N', help="override the model's blocks per stage")
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--frames', type=int, default=8)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
    p.add_argument('--amp', choices=['none', 'bf16'], default='none')
    p.add_argument('--channels-last', action='store_true', help='convert models to channels_last memory format')
    p.add_argument('--compile', action='store_true', help='torch.compile every model')
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: PyTorch default)')
    p.add_argument('--skip-baselines', action='store_true', help='leave out swin3d_t and mvit_v2_s')
    p.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                   help="'cpu': process CPU time instead of wall-clock time, unaffected by other processes; "
                        "needs --threads 1 (with more threads, OpenMP spin-waiting would count)")
    p.add_argument('--skip-memory', action='store_true', help='timings only')
    p.add_argument('--max-other-load', type=float, default=0.1,
                   help='CPU: repeat a timed run when other processes used more than this fraction of the CPUs')
    p.add_argument('--max-retries', type=int, default=20, help='repeats per timed run before keeping it anyway')
    p.add_argument('--memory-case', help=argparse.SUPPRESS)  # internal: CPU memory measurement in a child
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    if args.clock == 'cpu' and (args.threads != 1 or args.device != 'cpu'):
        p.error('--clock cpu needs --device cpu --threads 1')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_case:
        if not _configure_cpu_allocator():
            print('cannot measure CPU peak memory on this platform (needs Linux glibc and /proc)', file=sys.stderr)
            return 2
        case = next(c for c in _cases(args) if c.name == args.memory_case)
        print('PEAK ' + ' '.join(str(p) for p in _measure_memory(case, args, device)))
        return 0
    cases = run(args, argv)
    print()
    print(f'Video-FocalNet-{args.model[0].upper()}, batch {args.batch} x {args.frames} frames x {args.size}^2, '
          f'{_machine(device)}, {args.amp if args.amp != "none" else "fp32"}'
          f'{", channels_last" if args.channels_last else ""}{", torch.compile" if args.compile else ""}; '
          f'median of {args.reps} after {args.warmup} warm-up'
          f'{"; process CPU time" if args.clock == "cpu" else ""}; torch {torch.__version__}')
    print()
    print(table(cases, args))
    if device.type == 'cpu':
        retried = sum(c.retries for c in cases)
        kept = sum(c.contended for c in cases)
        print()
        print(f'(timed runs repeated because other processes used > {args.max_other_load:.0%} of the CPUs: '
              f'{retried}; kept although still contended: {kept})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
