"""How long each section of the GPU check takes, estimated before it starts, and the time caps that follow.

A section's time is the sum of what it does, each part priced from a measured figure:

* model steps from their FLOP counts (``tools.flops``: multiply-accumulates per 8 x 224^2 view; a training
  step is about three forward passes) divided by an effective rate per precision for the device;
* the fixed costs (a section's process, one ``torchrun`` run of ``main.py``, a toy epoch, a test video, a
  compile) from the ``--quick`` run, where they dominate: on a CPU these parts cost what they cost on a GPU
  machine's host, plus CUDA start-up, which ``DeviceCosts`` adds.

``plan_caps`` then gives every section a share of the budget proportional to its estimate, after a reserve
for the parent (start-up, the table); ``margin`` (budget share / estimate, the same for every section) says
how much slower than estimated a device may be before a section runs out of time. For an H100 it must be at
least ``MIN_MARGIN`` (tests/test_gpu_check.py checks the plan for one and for two GPUs).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

# tools.flops at 8 x 224^2 (docs/differences.md): 10^9 multiply-accumulates of one view
GMACS_PER_VIEW = {'T': 63.0, 'S': 124.3, 'B': 220.6}
PARAMS_MILLIONS = {'T': 49.6, 'S': 88.7, 'B': 157.4}   # for the checkpoint write (weights + two AdamW moments)
TRAIN_PASSES = 3.0          # forward + backward (about twice the forward) per training step
PARENT_RESERVE_S = 20.0     # the parent's own start-up and the final table, outside every section
MIN_MARGIN = 1.3            # each H100 section's cap is at least this multiple of its estimate


@dataclasses.dataclass(frozen=True)
class DeviceCosts:
    """Measured or estimated unit costs on one device (seconds unless named otherwise)."""

    name: str
    tflops: Dict[str, float]    # effective 10^12 FLOP/s of this model's steps: fp32 (TF32, as main.py
    #                             trains), fp32_strict (parity: no TF32), fp16, bf16
    section_start: float        # a section's process: fork, CUDA context, cuDNN / cuBLAS handles, model build
    autotune: float             # cudnn.benchmark's search for each new (precision, mode) shape
    launch: float               # one torchrun run of main.py: interpreter, imports, CUDA, process group, workers
    toy_epoch: float            # one toy epoch (training and validation) inside such a run
    toy_video: float            # writing one toy video
    loader_video: float         # writing one loader test video (340x256, 10 s H.264), per core
    loader_read: float          # what the loader section times (loader_rate.LOADER_READ_S at most)
    batch_trials: int           # batch search: trials (doubling, then bisection to 1/16)
    compile_s: Dict[str, float]  # inductor compile of T in bf16: 'train', 'infer'
    write_gbps: float           # checkpoint write, 10^9 bytes/s
    step_floor: Dict[str, float] = dataclasses.field(default_factory=lambda: {'infer': 0., 'train': 0.})
    #                             the least a step takes whatever its FLOPs: kernel launches, Python, autograd


# H100 SXM (80 GB) with a 16-core host. Effective rates are 12-15% of the dense peak (989 TFLOP/s fp16/bf16,
# 495 TF32, 67 fp32): depth-wise convolutions and small matrix products at batch 8 keep the tensor cores far
# from their peak; set low on purpose, since too high a rate would under-size the caps.
H100 = DeviceCosts(
    name='H100', tflops={'fp32': 50., 'fp32_strict': 10., 'fp16': 120., 'bf16': 120.},
    section_start=6., autotune=1., launch=12., toy_epoch=2., toy_video=0.05, loader_video=1.0, loader_read=15.,
    batch_trials=10, compile_s={'train': 60., 'infer': 30.}, write_gbps=0.5,
    step_floor={'infer': 0.01, 'train': 0.03})

# --quick on a loaded 2-core CPU (measured there, section by section: a tiny model's step costs its Python and
# autograd overhead, 0.3-1 s per training step and 0.03-0.12 s per inference batch; one torchrun run of
# main.py 30-45 s; the aot_eager compile of the training step 60-90 s)
CPU_QUICK = DeviceCosts(
    name='CPU (--quick)', tflops={'fp32': 1., 'fp32_strict': 1., 'fp16': 1., 'bf16': 1.},
    section_start=2., autotune=0., launch=35., toy_epoch=1.5, toy_video=0.1, loader_video=0.5, loader_read=3.,
    batch_trials=3, compile_s={'train': 80., 'infer': 18.}, write_gbps=0.2,
    step_floor={'infer': 0.12, 'train': 1.0})


def step_seconds(st, size: str, dtype: str, mode: str, batch: int, costs: DeviceCosts) -> float:
    """One inference batch or training step of ``size`` at the run's frames and image size."""
    gmacs = GMACS_PER_VIEW[size] * (st.frames / 8) * (st.img_size / 224) ** 2
    if st.quick:  # the tiny stand-ins: scale by width squared and depth against the published size
        model = st.size(size)
        published = {'T': (96, 12), 'S': (96, 24), 'B': (128, 24)}[size]
        gmacs *= (model.embed_dim / published[0]) ** 2 * sum(model.depths) / published[1]
    flops = 2e9 * gmacs * batch * (TRAIN_PASSES if mode == 'train' else 1.)
    return max(flops / (costs.tflops[dtype] * 1e12), costs.step_floor[mode])


def _measure(st, step: float, fns: int = 2) -> float:
    """``timing.time_interleaved`` of ``fns`` functions: warm-up, then up to ``iters`` steps or ``time_cap``."""
    return fns * (st.warmup * step + max(2 * step, min(st.iters * step, st.time_cap)))


def estimate(section, st, costs: DeviceCosts) -> float:
    """Seconds ``section`` (a ``plan.Section``) should take on ``costs``' device."""
    kind = section.target.split(':')[1]
    if kind == 'run_size':
        size = section.arg
        total = costs.section_start
        for mode in ('infer', 'train'):   # parity: fp32 without TF32, both implementations
            total += 2 * step_seconds(st, size, 'fp32_strict', mode, st.parity_batch, costs)
        for dtype in ('fp32', 'fp16', 'bf16'):
            for mode in ('infer', 'train'):
                total += 2 * costs.autotune + _measure(st, step_seconds(st, size, dtype, mode, st.batch, costs))
            total += 2 * step_seconds(st, size, dtype, 'train', st.batch, costs)   # the peak-memory steps
        bf16 = step_seconds(st, size, 'bf16', 'train', st.batch, costs)
        total += _measure(st, bf16) + 2 * bf16          # without selective checkpointing
        if size == 'B':                                 # the checkpoint write row
            total += 3 * 4e6 * PARAMS_MILLIONS['B'] * (1 if not st.quick else 1e-3) / (costs.write_gbps * 1e9) + 1
        return total
    if kind in ('run', 'run_two_ranks', 'run_two_gpus') and section.target.startswith('toy_run'):
        ranks = 1 if kind == 'run' else 2
        data = (st.toy_train + st.toy_val) * costs.toy_video
        # train 2 epochs, resume for a 3rd, evaluate 4 x 3 views (12 passes over the validation videos)
        runs = 3 * costs.launch * (1. + 0.3 * (ranks - 1)) + 3 * costs.toy_epoch + costs.toy_epoch * 12 * \
            st.toy_val / (st.toy_train + st.toy_val)
        group = 5. if kind == 'run' else 0.   # the world-size-1 process group with a DDP step
        return costs.section_start + data + runs + group
    if kind == 'run' and section.target.startswith('loader_rate'):
        cores = max(1, st.loader_workers)
        return costs.section_start + costs.loader_video * -(-st.loader_videos // cores) * 2 + costs.loader_read + 5.
    if kind == 'run' and section.target.startswith('batch_search'):
        # trials at up to 64x the speed rows' batch, two steps each (the second with optimizer state)
        big = step_seconds(st, section.arg, st.search_dtype, 'train', st.batch * 8, costs)
        return costs.section_start + costs.batch_trials * (2 * big + 1.)
    if kind == 'run_compiled':
        size, mode = st.compile_size, section.arg
        step = step_seconds(st, size, st.compile_dtype, mode, st.batch, costs)
        return costs.section_start + _measure(st, step) + costs.compile_s[mode] + _measure(st, step, fns=1)
    return float(section.cap)   # a section without a cost model here: the cap it was given is its estimate


def plan_caps(sections, st, costs: DeviceCosts) -> Tuple[List[Tuple[object, float, float]], float]:
    """``([(section, estimate, cap), ...], margin)``: the budget after ``PARENT_RESERVE_S`` shared out in
    proportion to the estimates; ``margin`` = cap / estimate for every section."""
    estimates = [estimate(s, st, costs) for s in sections]
    usable = max(st.budget - PARENT_RESERVE_S, 1.)
    margin = usable / max(sum(estimates), 1e-9)
    return [(s, e, e * margin) for s, e in zip(sections, estimates)], margin
