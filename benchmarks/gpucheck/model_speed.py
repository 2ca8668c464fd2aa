"""``models/`` against the reference implementation on one device: logits and gradients (fp32), then
inference and training clips/s and training peak memory in fp32 / fp16 / bf16, and with ``torch.compile``.

Both implementations get the same weights (the reference loads ``models/``' state dict). The speed rows
use the published recipe's step: SGD with Nesterov momentum, cross-entropy, ``torch.autocast`` for fp16
and bf16 and a ``GradScaler`` for fp16; stochastic depth is 0 so both do the same arithmetic. ``models/``
trains as it does by default, with selective activation checkpointing; one extra row turns that off. fp32
rows run as main.py trains (TF32 for matmuls and convolutions, ``utils.env.configure_determinism``); the
logits and gradient comparison turns TF32 off everywhere, so that it compares fp32 with fp32.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Dict, Iterator, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.reference_video_focalnet import ReferenceVideoFocalNet
from models import VideoFocalNet
from utils.env import configure_determinism

from .plan import CHECKPOINT_SIZE, DTYPES, MODES, ModelSize, Settings
from .report import one_line
from .runner import Channel
from .timing import autocast, free_memory, peak_memory, time_interleaved, timed_call

GIB = 2 ** 30


def setup_device(st: Settings, out: Channel) -> torch.device:
    """The device of the run; reports what it is (GPU, versions) into the run's meta once."""
    if st.device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(f'no CUDA device visible (torch {torch.__version__}, CUDA build '
                               f'{torch.version.cuda}); the CPU smoke run is --quick')
        configure_determinism(False)   # as main.py trains: cuDNN autotuning, TF32 matmuls and convolutions
        props = torch.cuda.get_device_properties(0)
        out.meta(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                 gpu_capability=f'{props.major}.{props.minor}', cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version(), driver=_driver_version())
        return torch.device('cuda', 0)
    return torch.device('cpu')


def _driver_version() -> str:
    try:
        res = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=20)
        return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else ''
    except (OSError, subprocess.SubprocessError):
        return ''


def model_kwargs(st: Settings, size: ModelSize) -> dict:
    return dict(size.kwargs(), num_classes=st.num_classes, num_frames=st.frames, img_size=st.img_size,
                drop_path_rate=0.)


def build_pair(st: Settings, size: ModelSize, device: torch.device, seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """(models/, reference) with identical weights on ``device``."""
    torch.manual_seed(seed)
    ours = VideoFocalNet(**model_kwargs(st, size))
    ref = ReferenceVideoFocalNet(**model_kwargs(st, size))
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device), ref.to(device)


def _redraw_weights(model: nn.Module, seed: int) -> None:
    """Variance-preserving random weights (N(0, 1/fan_in)), biases and norms shifted: with the original's
    std-0.02 init the modulation contributes ~1e-4 of each block's output, so a comparison of logits
    would hardly see it; with these weights every branch matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@contextlib.contextmanager
def _tf32_off() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _within(out: Channel, key: str, value: float, tol: float, note: str) -> None:
    note = f'{note}; tolerance {tol:g}'
    if value <= tol:
        out.ok(key, value, note=note)
    else:
        out.failed(key, f'{value:.2e} is above the tolerance {tol:g}', note=note)


def check_parity(st: Settings, size: ModelSize, device: torch.device, out: Channel) -> None:
    key = f'parity.{size.name}'
    ours, ref = build_pair(st, size, 'cpu')
    _redraw_weights(ours, seed=1)
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours, ref = ours.to(device), ref.to(device)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(st.parity_batch, st.frames, 3, st.img_size, st.img_size, generator=g).to(device)
    y = torch.randint(0, st.num_classes, (st.parity_batch,), generator=g).to(device)
    with _tf32_off():
        try:
            ours.eval()
            ref.eval()
            with torch.no_grad():
                a, b = ours(x), ref(x)
            diff = (a - b).abs().max().item()
            scale = b.abs().max().item()
            _within(out, f'{key}.logits', diff, st.logits_tol, f'max abs(logit) {scale:.3g}')
        except Exception as e:
            out.failed(f'{key}.logits', one_line(e))
        try:
            grads = {}
            for name, model in (('ours', ours), ('ref', ref)):
                model.train()
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                grads[name] = {n: p.grad for n, p in model.named_parameters()}
            worst, worst_name = 0., ''
            for n, gr in grads['ref'].items():
                rel = ((grads['ours'][n] - gr).abs().max() / gr.abs().max().clamp_min(1e-30)).item()
                if rel > worst:
                    worst, worst_name = rel, n
            _within(out, f'{key}.grads', worst, st.grads_tol, f'worst tensor {worst_name}')
        except Exception as e:
            out.failed(f'{key}.grads', one_line(e))
    del ours, ref
    free_memory(device)


def make_step(model: nn.Module, mode: str, dtype: str, x: torch.Tensor, y: torch.Tensor,
              device: torch.device) -> Callable[[], None]:
    """One inference batch, or one training step of the published recipe (see the module docstring)."""
    if mode == 'infer':
        def infer() -> None:
            model.eval()
            with torch.no_grad(), autocast(device, dtype):
                model(x)
        return infer
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == 'fp16')

    def train() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return train


def _batch(st: Settings, device: torch.device, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, st.frames, 3, st.img_size, st.img_size, device=device)
    y = torch.randint(0, st.num_classes, (batch,), device=device)
    return x, y


def _time_left(deadline: float) -> float:
    return deadline - time.monotonic()


def run_size(st: Settings, out: Channel, deadline: float, name: str) -> None:
    """The ``model:<size>`` section: parity, then speed and memory for every precision."""
    device = setup_device(st, out)
    size = st.size(name)
    check_parity(st, size, device, out)
    ours, ref = build_pair(st, size, device)
    x, y = _batch(st, device, st.batch)
    reserve = 4 * st.time_cap   # a measurement is not started with less than this left
    for dtype in DTYPES:
        train_steps: Dict[str, Callable[[], None]] = {}
        for mode in MODES:
            key = f'speed.{size.name}.{dtype}.{mode}'
            if _time_left(deadline) < reserve:
                out.skipped(key, f'the section had {max(_time_left(deadline), 0):.0f} s left')
                continue
            try:
                steps = {'ours': make_step(ours, mode, dtype, x, y, device),
                         'ref': make_step(ref, mode, dtype, x, y, device)}
                t = time_interleaved(steps, device, st.warmup, st.iters, st.time_cap)
                out.ok(key, st.batch / t['ours'], st.batch / t['ref'],
                       note=f"ms per batch: models/ {1e3 * t['ours']:.1f}, reference {1e3 * t['ref']:.1f}")
                if mode == 'train':
                    train_steps = steps
            except Exception as e:
                out.failed(key, one_line(e))
                free_memory(device)
        key = f'memory.{size.name}.{dtype}'
        if not train_steps:
            out.failed(key, 'no training step of this precision ran')
            continue
        try:
            peaks = {impl: peak_memory(step, device) for impl, step in train_steps.items()}
            absolute = (f"absolute peak (weights, optimizer state, batch included): models/ "
                        f"{peaks['ours'][1] / GIB:.2f}, reference {peaks['ref'][1] / GIB:.2f} GiB")
            out.ok(key, peaks['ours'][0] / GIB, peaks['ref'][0] / GIB,
                   note=absolute if device.type == 'cuda' else
                   f'CPU: rise of the resident-set high-water mark, approximate; {absolute}')
        except Exception as e:
            out.failed(key, one_line(e))
        del train_steps
        free_memory(device)
    _time_without_selective_checkpointing(st, ours, x, y, device, out, deadline, reserve, size)
    if size.name == CHECKPOINT_SIZE:
        time_checkpoint_write(st, ours, out, size)


def time_checkpoint_write(st: Settings, model: nn.Module, out: Channel, size: ModelSize) -> None:
    """``ckpt.<size>.write``: the weights and two AdamW moments per weight (what ``last.pth`` holds), written
    the way main.py writes checkpoints (temp file, fsync, rename) into the run's --out folder, then removed.
    A preemption save must fit in the warning before the time limit (docs/slurm.md)."""
    from engine.checkpoint.saving import save_checkpoint
    key = f'ckpt.{size.name}.write'
    folder = tempfile.mkdtemp(prefix='gpu_check_ckpt_', dir=st.out_dir or None)
    try:
        weights = model.state_dict()
        moments = {f'{name}.{m}': torch.zeros_like(t) for name, t in weights.items() if t.is_floating_point()
                   for m in ('exp_avg', 'exp_avg_sq')}
        nbytes = sum(t.numel() * t.element_size() for t in list(weights.values()) + list(moments.values()))
        start = time.monotonic()
        save_checkpoint(os.path.join(folder, 'last.pth'), {'model': weights, 'optimizer': moments, 'epoch': 0})
        seconds = time.monotonic() - start
        out.ok(key, seconds, note=f'{nbytes / 1e9:.2f} GB in {os.path.dirname(folder) or "."}: '
               f'{nbytes / 1e9 / max(seconds, 1e-9):.2f} GB/s, device-to-host copy included')
        del moments
    except Exception as e:
        out.failed(key, one_line(e))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _time_without_selective_checkpointing(st: Settings, ours: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                          device: torch.device, out: Channel, deadline: float, reserve: float,
                                          size: ModelSize) -> None:
    key = f'speed.{size.name}.bf16.train_nosac'
    if _time_left(deadline) < reserve:
        out.skipped(key, f'the section had {max(_time_left(deadline), 0):.0f} s left')
        return
    try:
        default = make_step(ours, 'train', 'bf16', x, y, device)
        plain = make_step(ours, 'train', 'bf16', x, y, device)

        def without() -> None:
            ours.set_selective_checkpointing(False)
            try:
                plain()
            finally:
                ours.set_selective_checkpointing(True)
        t = time_interleaved({'default': default, 'plain': without}, device, st.warmup, st.iters, st.time_cap)
        peak_off, peak_on = peak_memory(without, device)[1], peak_memory(default, device)[1]
        out.ok(key, st.batch / t['plain'], note=selective_checkpointing_verdict(
            t['default'] / t['plain'], peak_on / GIB, peak_off / GIB))
    except Exception as e:
        out.failed(key, one_line(e))
        free_memory(device)


SAC_MIN_GAIN = 0.05   # below this speed-up, turning selective checkpointing off is not worth its memory


def selective_checkpointing_verdict(speedup: float, peak_on_gib: float, peak_off_gib: float) -> str:
    """The rule docs/gpu.md states, applied to one measurement: ``speedup`` = clips/s without selective
    checkpointing / clips/s with it (the default); peaks are absolute training peaks at the row's batch."""
    figures = (f'off: {speedup:.2f}x the default\'s clips/s, absolute peak {peak_off_gib:.2f} GiB vs '
               f'{peak_on_gib:.2f} GiB with it')
    if speedup < 1 + SAC_MIN_GAIN:
        return f'{figures}; keep TRAIN.SELECTIVE_CHECKPOINT True (the default): off gains under ' \
               f'{SAC_MIN_GAIN:.0%}'
    return (f'{figures}; TRAIN.SELECTIVE_CHECKPOINT False is {speedup - 1:.0%} faster where the batch still fits '
            f'with it off ({peak_off_gib - peak_on_gib:+.2f} GiB at this batch)')


def run_compiled(st: Settings, out: Channel, deadline: float, mode: str) -> None:
    """The ``compile:<mode>`` section: ``torch.compile`` of models/, then of the reference if time allows."""
    device = setup_device(st, out)
    size = st.size(st.compile_size)
    dtype = st.compile_dtype
    key = f'compile.{size.name}.{dtype}.{mode}'
    ours, ref = build_pair(st, size, device)
    x, y = _batch(st, device, st.batch)
    eager = time_interleaved({'ours': make_step(ours, mode, dtype, x, y, device),
                              'ref': make_step(ref, mode, dtype, x, y, device)},
                             device, st.warmup, st.iters, st.time_cap)
    rate: Dict[str, float] = {}
    compile_s: Dict[str, float] = {}
    for impl, model in (('ours', ours), ('ref', ref)):
        if impl == 'ref' and not st.compile_reference:
            out.ok(key, rate['ours'], note=_compile_note(rate, compile_s, eager, st.batch)
                   + '; reference not compiled in --quick (the same code as for models/)')
            return
        if impl == 'ref':
            needed = 1.3 * compile_s['ours'] + 4 * st.time_cap
            if _time_left(deadline) < needed:
                notes = _compile_note(rate, compile_s, eager, st.batch)
                out.ok(key, rate['ours'], note=f'{notes}; reference not compiled: {_time_left(deadline):.0f} s '
                       f'left, its compile needs about {needed:.0f} s')
                return
        compiled = torch.compile(model, backend=st.compile_backend)
        step = make_step(compiled, mode, dtype, x, y, device)
        compile_s[impl] = timed_call(step, device) + timed_call(step, device)  # a 2nd call may compile backward
        t = time_interleaved({impl: step}, device, max(st.warmup - 2, 0), st.iters, st.time_cap)
        rate[impl] = st.batch / t[impl]
        if impl == 'ours':  # in the table already, should the reference's compile outlast the section
            out.ok(key, rate['ours'], note=_compile_note(rate, compile_s, eager, st.batch)
                   + '; reference not measured: the section ended during its compile')
    out.ok(key, rate['ours'], rate['ref'], note=_compile_note(rate, compile_s, eager, st.batch))


def _compile_note(rate: Dict[str, float], compile_s: Dict[str, float], eager: Dict[str, float], batch: int) -> str:
    parts = []
    for impl, word in (('ours', 'models/'), ('ref', 'reference')):
        if impl in rate:
            parts.append(f'{word}: compile {compile_s[impl]:.0f} s, {rate[impl] * eager[impl] / batch:.2f}x eager')
    return '; '.join(parts)
