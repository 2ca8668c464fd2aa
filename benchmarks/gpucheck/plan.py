"""What a run measures: the settings of the full GPU run and of ``--quick`` (CPU, tiny sizes), the sections
in the order they run, and the rows every section must produce.

The full run is sized for one H100 / H200 and about 10 minutes, setup included: sections run in order of how much
a user needs their answer, each in its own process with a time cap, so that a slow or crashing section costs
only its own rows. The caps share the budget in proportion to each section's estimated time (``costs.py``:
FLOP counts and the fixed costs measured in the ``--quick`` run); the run prints the plan before it starts.
``torch.compile`` runs for Video-FocalNet-T in bf16 only: compiling S and B (or other precisions) would not
fit the budget, and the table says so. With two or more GPUs visible, ``ddp2`` trains on two of them over NCCL
instead of ``ddp``'s two ranks sharing one GPU.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Tuple

from .costs import CPU_QUICK, H100, PARENT_RESERVE_S, DeviceCosts, plan_caps
from .report import Row

DTYPES = ('fp32', 'fp16', 'bf16')
# what main.py needs beyond torch and timm (config files, logging, the toy videos' writer)
MAIN_PY_MODULES = ('yacs', 'termcolor', 'av')
MODES = ('infer', 'train')
MODE_WORDS = {'infer': 'inference', 'train': 'training step'}
CHECKPOINT_SIZE = 'B'   # the model whose checkpoint write is timed (the largest, the one a preemption must save)


@dataclasses.dataclass(frozen=True)
class ModelSize:
    name: str                 # 'T', 'S', 'B'
    title: str                # how the table names it
    embed_dim: int
    depths: Tuple[int, ...]

    def kwargs(self) -> dict:
        return dict(embed_dim=self.embed_dim, depths=self.depths)


PUBLISHED = (ModelSize('T', 'Video-FocalNet-T', 96, (2, 2, 6, 2)),
             ModelSize('S', 'Video-FocalNet-S', 96, (2, 2, 18, 2)),
             ModelSize('B', 'Video-FocalNet-B', 128, (2, 2, 18, 2)))
# --quick: the same three rows with tiny stand-ins (same code paths, a CPU second or less per step)
TINY = (ModelSize('T', 'tiny T stand-in', 8, (1, 1, 1, 1)),
        ModelSize('S', 'tiny S stand-in', 8, (1, 1, 2, 1)),
        ModelSize('B', 'tiny B stand-in', 16, (1, 1, 2, 1)))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a section needs; plain data, so it crosses into a spawned process too."""

    quick: bool
    device: str
    sizes: Tuple[ModelSize, ...]
    frames: int
    img_size: int
    num_classes: int
    batch: int                  # clips per step in the speed rows (the published recipe's per-GPU batch)
    parity_batch: int
    warmup: int                 # untimed steps per implementation (cuDNN autotuning happens here)
    iters: int                  # at most this many timed steps per implementation ...
    time_cap: float             # ... and no more than this many seconds of them (at least 2 steps)
    compile_backend: str        # inductor on the GPU; aot_eager in --quick (same graph capture, no codegen)
    search_start: int
    search_cap: int
    toy_train: int
    toy_val: int
    toy_frames: int
    toy_size: int
    toy_opts: Tuple[str, ...]   # --opts for main.py on top of the toy config
    loader_videos: int
    loader_width: int
    loader_height: int
    loader_frames: int
    loader_input: int
    loader_batch: int
    loader_batches: int
    loader_workers: int
    budget: float               # seconds for all sections together
    gpus: int = 1               # CUDA devices visible (0 in --quick): two or more plan the 2-GPU NCCL section
    out_dir: str = ''           # the run's --out folder (the checkpoint write row writes there)
    logits_tol: float = 1e-4    # absolute, on logits of order 1 (the tests' tolerance)
    grads_tol: float = 1e-3     # relative to each gradient tensor's largest entry
    compile_size: str = 'T'
    compile_dtype: str = 'bf16'
    search_dtype: str = 'bf16'
    recipe_dtype: str = 'fp16'  # the published recipe's TRAIN.AMP: the loader is compared with this step
    search_precision: float = 1 / 16
    compile_reference: bool = True   # --quick compiles models/ only: the reference's compile is the same code

    def size(self, name: str) -> ModelSize:
        return next(s for s in self.sizes if s.name == name)


def full_settings(budget: float = 540., gpus: int = 1) -> Settings:
    cores = os.cpu_count() or 1
    return Settings(
        quick=False, device='cuda', sizes=PUBLISHED, frames=8, img_size=224, num_classes=400, batch=8,
        parity_batch=2, warmup=3, iters=10, time_cap=3.0, compile_backend='inductor', search_start=8,
        search_cap=2048, toy_train=64, toy_val=16, toy_frames=16, toy_size=64,
        toy_opts=('DATA.BATCH_SIZE', '8', 'DATA.NUM_WORKERS', '4', 'DATA.PIN_MEMORY', 'True',
                  'TRAIN.AMP', 'fp16', 'TEST.BATCH_SIZE', '4'),
        loader_videos=16, loader_width=340, loader_height=256, loader_frames=300, loader_input=224,
        loader_batch=8, loader_batches=80, loader_workers=cores, budget=budget, gpus=max(1, gpus))


def quick_settings(budget: float = 900.) -> Settings:
    cores = os.cpu_count() or 1
    return Settings(
        quick=True, device='cpu', sizes=TINY, frames=2, img_size=32, num_classes=10, batch=2, parity_batch=2,
        warmup=1, iters=2, time_cap=0.3, compile_backend='aot_eager', search_start=1, search_cap=4,
        toy_train=8, toy_val=4, toy_frames=8, toy_size=32,
        toy_opts=('DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'DATA.BATCH_SIZE', '4',
                  'DATA.NUM_WORKERS', '1', 'MODEL.FOCAL.EMBED_DIM', '8', 'MODEL.FOCAL.DEPTHS', '[1,1,1,1]',
                  'MODEL.TUBELET_SIZE', '1', 'TEST.BATCH_SIZE', '2', 'TENSORBOARD', 'False',
                  # fp16 convolutions on a CPU are slow reference kernels (seconds per step even for this
                  # model); the GPU run trains in fp16 with the grad scaler, as the published recipe does
                  'TRAIN.AMP', 'none'),
        loader_videos=2, loader_width=96, loader_height=64, loader_frames=40, loader_input=48, loader_batch=2,
        loader_batches=6, loader_workers=cores, budget=budget, compile_reference=False, gpus=0)


@dataclasses.dataclass(frozen=True)
class Section:
    """A part of the run that runs in one child process.

    Args:
        name: what ``--only`` / ``--skip`` select (``model:T``, ``toy``, ...).
        target: ``module:function`` under ``benchmarks.gpucheck``, called as ``fn(settings, emit, deadline, arg)``.
        arg: passed through (the model size, the compile mode).
        rows: the rows it must produce; those it does not produce become FAILED rows.
        cap: the most seconds it may take; less when less of the budget is left.
        min_time: below this much budget left it is not started (its rows become SKIPPED).
        needs: python modules it cannot run without (beyond torch and timm); where one is missing its rows
            become SKIPPED and the other sections run.
    """

    name: str
    target: str
    arg: str
    rows: Tuple[Row, ...]
    cap: float
    min_time: float
    needs: Tuple[str, ...] = ()


def _model_rows(st: Settings, size: ModelSize) -> List[Row]:
    t, b = size.title, st.batch
    rows = [
        Row(f'parity.{size.name}.logits', f'{t}: logits, max abs(models/ - reference), fp32 without TF32, '
            f'batch {st.parity_batch}', 'abs'),
        Row(f'parity.{size.name}.grads', f'{t}: gradients, max abs(models/ - reference) / max abs(reference), '
            'per tensor, fp32', 'rel')]
    for dtype in DTYPES:
        for mode in MODES:
            rows.append(Row(f'speed.{size.name}.{dtype}.{mode}', f'{t}: {MODE_WORDS[mode]} {dtype}, batch {b}',
                            'clips/s'))
        rows.append(Row(f'memory.{size.name}.{dtype}', f'{t}: training peak memory {dtype}, batch {b}, over the '
                        'weights (the note: absolute)', 'GiB'))
    rows.append(Row(f'speed.{size.name}.bf16.train_nosac', f'{t}: training step bf16, batch {b}, models/ with '
                    'selective checkpointing off (the note says whether to keep the default)', 'clips/s'))
    if size.name == CHECKPOINT_SIZE:
        rows.append(Row(f'ckpt.{size.name}.write', f'{t}: write a training checkpoint (weights + AdamW state, '
                        'fsynced) into --out: what a preemption save needs before the time limit', 's'))
    return rows


def _compile_rows(st: Settings, mode: str) -> List[Row]:
    size = st.size(st.compile_size)
    return [Row(f'compile.{size.name}.{st.compile_dtype}.{mode}',
                f'{size.title}: {MODE_WORDS[mode]} {st.compile_dtype} + torch.compile ({st.compile_backend}), '
                f'batch {st.batch}', 'clips/s')]


def _toy_rows(st: Settings) -> List[Row]:
    backend = 'gloo' if st.device == 'cpu' else 'nccl'
    return [Row('toy.data', f'main.py toy: generate {st.toy_train}+{st.toy_val} toy videos', 's'),
            Row('toy.train', 'main.py toy: train 2 epochs (torchrun --standalone --nproc_per_node 1)', 's'),
            Row('toy.resume', 'main.py toy: same command with 3 epochs (auto-resume, 1 more epoch)', 's'),
            Row('toy.eval', 'main.py toy: --eval of last.pth with 4 clips x 3 crops', 'top-1 %'),
            Row('dist.ddp', f'process group ({backend}, world size 1): all_reduce + DDP training step', 's')]


def _ddp_rows(st: Settings) -> List[Row]:
    where = 'one GPU, gloo with CUDA tensors' if st.device == 'cuda' else 'CPU, gloo'
    opts = '--use-checkpoint --accumulation-steps 2'
    return [Row('ddp.train', f'main.py toy on 2 ranks ({where}), {opts}: train 2 epochs', 's'),
            Row('ddp.resume', f'main.py toy on 2 ranks, {opts}: same command with 3 epochs (auto-resume)', 's'),
            Row('ddp.eval', 'main.py toy on 2 ranks: --eval of last.pth with 4 clips x 3 crops', 'top-1 %')]


def _two_gpu_rows(st: Settings) -> List[Row]:
    opts = '--use-checkpoint --accumulation-steps 2'
    return [Row('ddp2.train', f'main.py toy on 2 GPUs (NCCL), {opts}: train 2 epochs', 's'),
            Row('ddp2.resume', f'main.py toy on 2 GPUs (NCCL), {opts}: same command with 3 epochs (auto-resume)', 's'),
            Row('ddp2.eval', 'main.py toy on 2 GPUs (NCCL): --eval of last.pth with 4 clips x 3 crops', 'top-1 %')]


def _loader_rows(st: Settings) -> List[Row]:
    return [Row('loader.train', f'train loader: {st.loader_workers} workers, {st.loader_width}x{st.loader_height} '
                f'H.264 -> {st.loader_input}^2 x {st.frames} frames, batch {st.loader_batch}', 'clips/s')]


def sections(st: Settings) -> List[Section]:
    """All sections, in the order they run (what a user needs most first), each with its time cap."""
    by_name = {s.name: s for s in st.sizes}
    model = {name: Section(f'model:{name}', 'model_speed:run_size', name, tuple(_model_rows(st, by_name[name])),
                           0, 20) for name in by_name}
    out = [model['T'],
           Section('toy', 'toy_run:run', '', tuple(_toy_rows(st)), 0, 30, needs=MAIN_PY_MODULES),
           Section('ddp2', 'toy_run:run_two_gpus', '', tuple(_two_gpu_rows(st)), 0, 30, needs=MAIN_PY_MODULES)
           if st.gpus >= 2 else
           Section('ddp', 'toy_run:run_two_ranks', '', tuple(_ddp_rows(st)), 0, 30, needs=MAIN_PY_MODULES),
           Section('loader', 'loader_rate:run', '', tuple(_loader_rows(st)), 0, 15, needs=('av',)),
           model['B'],
           Section('batch:T', 'batch_search:run', st.compile_size,
                   (Row(f'maxbatch.{st.compile_size}.{st.search_dtype}',
                        f'{st.size(st.compile_size).title}: largest training batch that fits, {st.search_dtype}, '
                        'models/ (selective checkpointing on)', 'clips'),), 0, 15),
           Section('compile:train', 'model_speed:run_compiled', 'train', tuple(_compile_rows(st, 'train')), 0,
                   10 if st.quick else 40),
           model['S'],
           Section('compile:infer', 'model_speed:run_compiled', 'infer', tuple(_compile_rows(st, 'infer')), 0,
                   10 if st.quick else 30)]
    return fit_caps(out, st)


def fit_caps(chosen: List[Section], st: Settings) -> List[Section]:
    """``chosen`` with caps that share the budget among them in proportion to their estimated times (a rerun
    of some sections gives them the whole budget)."""
    planned, _ = plan_caps(chosen, st, device_costs(st))
    return [dataclasses.replace(s, cap=round(cap), min_time=min(s.min_time, round(cap))) for s, _, cap in planned]


def device_costs(st: Settings) -> DeviceCosts:
    """The unit costs the caps are sized with: the --quick CPU's, or an H100's for a GPU run."""
    return CPU_QUICK if st.quick else H100


def describe_plan(chosen: List[Section], st: Settings) -> List[str]:
    """The lines printed before a run starts: each section's estimate and cap, and how they add up."""
    costs = device_costs(st)
    planned, margin = plan_caps(chosen, st, costs)
    lines = [f'plan: {len(chosen)} sections, caps from estimated times on {costs.name} x {margin:.2f}, '
             f'{sum(s.cap for s in chosen):.0f} s of the {st.budget:.0f} s budget '
             f'({PARENT_RESERVE_S:.0f} s kept for start-up and the table)']
    for section, est, _ in planned:
        lines.append(f'plan:   {section.name:14s} estimated {est:5.0f} s, at most {section.cap:4.0f} s')
    return lines


def derived_rows(st: Settings) -> List[Row]:
    """Rows computed from other rows once every section ran: would the loader keep the GPU fed?"""
    cores, gpus = max(1, st.loader_workers), max(1, st.gpus)
    rows = [Row('loader.per_gpu', f'train loader clips/s per GPU: the share of {cores} cores / {gpus} GPU(s) = '
                f'{max(1, cores // gpus)} cores each, scaled from loader.train', 'clips/s')]
    rows += [Row(f'starve.{s.name}', f'{s.title}: loader clips/s per GPU / training clips/s ({st.recipe_dtype}, '
                 f'batch {st.batch}; below 1: the GPU waits for data)', 'x') for s in st.sizes]
    c = st.size(st.compile_size)
    rows.append(Row(f'starve.{c.name}.compiled', f'{c.title}: loader clips/s per GPU / compiled training clips/s '
                    f'({st.compile_dtype}, batch {st.batch})', 'x'))
    return rows


def select(all_sections: List[Section], only: Optional[List[str]], skip: Optional[List[str]]) -> List[Section]:
    names = [s.name for s in all_sections]
    for name in (only or []) + (skip or []):
        if name not in names:
            raise ValueError(f'unknown section {name!r}; the sections are: {", ".join(names)}')
    return [s for s in all_sections if (not only or s.name in only) and s.name not in (skip or [])]


SectionFn = Callable[[Settings, Callable[[Row], None], float, str], None]
TARGETS: Dict[str, str] = {}  # filled lazily by runner.resolve (import cost stays in the child's parent)
