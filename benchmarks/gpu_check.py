"""The GPU check: one run that prints one table and writes it as JSON (docs/gpu.md says how to read it).

    benchmarks/gpu_check.sh                 # on a machine with one GPU: about 10 minutes, setup included
    benchmarks/gpu_check.sh --quick         # the same code on the CPU with tiny sizes (CI runs this)
    python -m benchmarks.gpu_check --only model:T,toy --budget 200     # a rerun of some sections

For Video-FocalNet-T, S and B at 8 x 224^2 it measures, in this order (the sections; ``--only`` / ``--skip``
take their names):

* ``model:T`` (then ``model:S``, ``model:B``): logits and gradients of ``models/`` against the reference
  implementation on the GPU (fp32 without TF32, same weights; max abs difference), inference and training
  clips/s of both in fp32 / fp16 / bf16 and training peak memory (over the weights, and absolute),
  interleaved step by step; bf16 training without selective checkpointing, with the verdict on it;
* ``toy``: ``main.py`` on toy data through ``torchrun --standalone --nproc_per_node 1`` (fp16 + grad scaler,
  pinned memory): train 2 epochs, rerun with 3 (auto-resume), ``--eval`` 4x3; a world-size-1 NCCL group
  with a DDP step (main.py makes no process group for one process);
* ``ddp``: the same on 2 ranks sharing the one device (gloo), with ``--use-checkpoint --accumulation-steps 2``:
  DDP, ``no_sync`` micro-batches, checkpointing, resume and the sharded 4x3 evaluation of main.py; with two
  or more GPUs visible ``ddp2`` instead: the same on 2 GPUs over NCCL;
* ``loader``: the train DataLoader's clips/s with every CPU core, one GPU's share of it (cores / GPUs), then
  the ratio of that share to each model's training clips/s (``starve.*``: below 1 the GPU would wait for data);
* ``model:B`` also times the write of B's training checkpoint into ``--out`` (``ckpt.B.write``);
* ``batch:T``: the largest bf16 training batch of T that fits (doubling, then bisection; OOM caught);
* ``compile:train``, ``compile:infer``: ``torch.compile`` of T in bf16, models/ first, the reference
  when time is left (S and B, and other precisions, would not fit the budget).

The order: model:T, toy, ddp / ddp2, loader, model:B, batch:T, compile:train, model:S, compile:infer. Each
section runs in its own process with a time cap, its share of ``--budget`` in proportion to its estimated
time (``gpucheck/costs.py``); the plan is printed before the first section starts. A row that fails
says FAILED with a one-line reason and the run goes on. A section that needs a python module that is not
installed (``toy`` and ``ddp``: yacs, termcolor, PyAV; ``loader``: PyAV) is SKIPPED with a warning. The JSON (``--out``, default ``$OUT`` or
``output/gpu_check``) is rewritten after every row, so a run stopped from outside still leaves the partial
table. Exit code 0 when every row is ok, 1 otherwise, 2 for a bad command line.
"""
from __future__ import annotations

import os

# Before torch is imported: torch.cuda.is_available() in this parent must not initialise CUDA, since the
# sections are forked from it and initialise CUDA themselves.
os.environ.setdefault('PYTORCH_NVML_BASED_CUDA_CHECK', '1')

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

import torch  # noqa: E402

from benchmarks.gpucheck import plan, runner  # noqa: E402
from benchmarks.gpucheck.report import FAILED, OK, PENDING, SKIPPED, Report, Row, format_value  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git_commit() -> str:
    try:
        res = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        return res.stdout.strip() if res.returncode == 0 else ''
    except (OSError, subprocess.SubprocessError):
        return ''


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'CPU'


# the oldest Linux driver each CUDA major release of torch's wheels runs on (NVIDIA's CUDA release notes;
# minor-version compatibility covers the later 12.x and 13.x toolkits)
MIN_DRIVER = {'13': '580.65.06', '12': '525.60.13', '11': '450.80.02'}


def _version(text: str) -> Optional[tuple]:
    try:
        return tuple(int(p) for p in text.split('.'))
    except ValueError:
        return None


def driver_version() -> str:
    """The NVIDIA driver's version from nvidia-smi ('' without one)."""
    try:
        res = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=20)
        return res.stdout.strip().splitlines()[0].strip() if res.returncode == 0 and res.stdout.strip() else ''
    except (OSError, subprocess.SubprocessError):
        return ''


def no_cuda_message(driver: str, torch_version: str, cuda_build: Optional[str]) -> str:
    """Why the full run cannot start, in one line: a driver older than the wheel's CUDA build needs, else no
    visible device."""
    needed = MIN_DRIVER.get((cuda_build or '').split('.')[0])
    have = _version(driver) if driver else None
    if needed and have and have < _version(needed):
        return (f'gpu_check: the NVIDIA driver {driver} is older than the {needed} that torch '
                f'{torch_version} (a CUDA {cuda_build} build) needs, so torch sees no GPU: update the driver, or '
                f'install a torch build for an older CUDA that this driver supports (docs/gpu.md)')
    return (f'gpu_check: no CUDA device is visible (torch {torch_version}, CUDA build {cuda_build}'
            f'{f", driver {driver}" if driver else ", no NVIDIA driver found"}); the CPU smoke run is --quick')


def _names(text: Optional[str]) -> Optional[List[str]]:
    return [n.strip() for n in text.split(',') if n.strip()] if text else None


def missing_modules(sections: List[plan.Section]) -> Dict[str, List[str]]:
    """``{section name: [python modules it needs that are not installed]}`` for the sections that cannot run."""
    out = {}
    for section in sections:
        missing = [m for m in section.needs if importlib.util.find_spec(m) is None]
        if missing:
            out[section.name] = missing
    return out


def derive(st: plan.Settings, report: Report) -> None:
    """``loader.per_gpu`` (the loader's clips/s with one GPU's share of the cores) and the ``starve.*`` rows: that
    share divided by training clips/s measured earlier in this run."""
    measured = report.get('loader.train')
    cores, gpus = max(1, st.loader_workers), max(1, st.gpus)
    share = max(1, cores // gpus)
    per_gpu_row = next((r for r in plan.derived_rows(st) if r.key == 'loader.per_gpu'), None)
    if per_gpu_row is None:   # not planned in this run
        pass
    elif measured is not None and measured.status == OK:
        # decoding scales with the cores it gets (one worker per core), so a GPU's share is share/cores of it
        note = (f'{format_value(measured.ours)} clips/s with {cores} workers x {share}/{cores} ({gpus} GPU(s) share '
                f'{cores} cores: DATA.NUM_WORKERS {max(1, share - 1)} per process)')
        report.update(Row(per_gpu_row.key, per_gpu_row.label, per_gpu_row.unit, ours=measured.ours * share / cores,
                          status=OK, note=note))
    else:
        in_run = measured is not None and measured.status != SKIPPED
        report.update(Row(per_gpu_row.key, per_gpu_row.label, per_gpu_row.unit, status=FAILED if in_run else SKIPPED,
                          reason='needs loader.train' + ('' if in_run else ', not part of this run')))
    loader = report.get('loader.per_gpu')
    for row in plan.derived_rows(st):
        if row.key == 'loader.per_gpu':
            continue
        name = row.key.split('.')[1]
        source = (f'compile.{name}.{st.compile_dtype}.train' if row.key.endswith('.compiled')
                  else f'speed.{name}.{st.recipe_dtype}.train')
        model = report.get(source)
        missing = [k for k, r in (('loader.per_gpu', loader), (source, model)) if r is None or r.status != OK]
        if missing:
            in_run = all(report.get(k) is not None and report.get(k).status != SKIPPED for k in missing)
            report.update(Row(row.key, row.label, row.unit, status=FAILED if in_run else SKIPPED,
                              reason=f'needs {" and ".join(missing)}' + ('' if in_run else ', not part of this run')))
            continue
        ratio = loader.ours / model.ours
        verdict = 'the GPU would wait for data' if ratio < 1 else 'the loader keeps up'
        report.update(Row(row.key, row.label, row.unit, ours=ratio, status=OK,
                          note=f'{format_value(loader.ours)} / {format_value(model.ours)} clips/s: {verdict}'))


def header(report: Report, st: plan.Settings) -> str:
    m = report.meta
    device = (f"{m.get('gpu', 'GPU ?')} ({m.get('gpu_memory_gib', '?')} GiB, driver {m.get('driver') or '?'})"
              if not st.quick else f"CPU {m.get('cpu')}")
    cuda = f", CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}" if not st.quick else ''
    lines = [f"GPU check{' --quick (CPU smoke run, tiny sizes)' if st.quick else ''}: {device}; "
             f"torch {m.get('torch')}{cuda}; {m.get('cpu_count')} CPU cores; {m.get('date')}; "
             f"commit {m.get('commit') or '?'}; {m.get('elapsed_s', 0):.0f} s of a {st.budget:.0f} s budget",
             f'Speed rows: batch {st.batch} x {st.frames} frames x {st.img_size}^2, median after {st.warmup} '
             f'warm-up steps, models/ and reference interleaved step by step; training = SGD Nesterov step '
             f'(GradScaler in fp16), drop-path 0, models/ with its default selective checkpointing; '
             + ('' if st.quick else 'fp32 = as main.py trains (TF32 matmuls and convolutions, cudnn.benchmark on); ')
             + f'torch.compile: {st.compile_size} in {st.compile_dtype} only ({st.compile_backend}), since S/B '
             'and other precisions would not fit the time budget.']
    return '\n'.join(lines)


def _print_row(start: float) -> callable:
    def show(row: Row) -> None:
        if row.status == OK:
            ref = f' | reference {format_value(row.reference)}' if row.reference is not None else ''
            ratio = f' ({row.ratio:.2f}x)' if row.ratio is not None else ''
            text = f'models/ {format_value(row.ours)}{ref} {row.unit}{ratio}'
        else:
            text = row.reason
        print(f'[{time.monotonic() - start:6.1f} s] {row.status:7s} {row.key:28s} {text}', flush=True)
    return show


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.gpu_check',
                                     description='GPU check: one table of parity, speed, memory, main.py and '
                                                 'loader figures (see the module docstring).')
    parser.add_argument('--quick', action='store_true', help='the same code on the CPU with tiny sizes (a few minutes; a 900 s budget)')
    parser.add_argument('--out', help='folder for gpu_check.json / .md / .log (default: $OUT, else '
                                      'output/gpu_check)')
    parser.add_argument('--budget', type=float, help='seconds for all sections (default 540; --quick: 900)')
    parser.add_argument('--only', help='comma-separated sections to run (default: all)')
    parser.add_argument('--skip', help='comma-separated sections to leave out')
    parser.add_argument('--list', action='store_true', help='print the sections and their rows, then exit')
    args = parser.parse_args(argv)
    if args.budget is not None and args.budget <= 0:
        parser.error(f'--budget: expected a positive number of seconds, got {args.budget}')
    gpus = 0 if args.quick else torch.cuda.device_count()   # NVML's count: CUDA stays uninitialised here
    st = plan.quick_settings(args.budget or 900.) if args.quick else plan.full_settings(args.budget or 540., gpus)
    try:
        chosen = plan.fit_caps(plan.select(plan.sections(st), _names(args.only), _names(args.skip)), st)
    except ValueError as e:
        parser.error(str(e))
    if args.list:
        for section in chosen:
            print(f'{section.name}: ' + ', '.join(r.key for r in section.rows))
        print('\n'.join(plan.describe_plan(chosen, st)))
        return 0
    if not args.quick and not torch.cuda.is_available():
        print(no_cuda_message(driver_version(), torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2
    unavailable = missing_modules(chosen)
    for name, modules in unavailable.items():
        print(f"gpu_check: warning: section {name} skipped: python module(s) {', '.join(modules)} not installed "
              "(benchmarks/gpu_check.sh installs them from wheels in .whl/)", file=sys.stderr, flush=True)
    for section in chosen:  # import every section's code here, once, so that forked sections inherit it
        if section.name not in unavailable:
            runner.resolve(section.target)

    out_dir = os.path.abspath(args.out or os.environ.get('OUT') or os.path.join(REPO, 'output', 'gpu_check'))
    os.makedirs(out_dir, exist_ok=True)
    st = dataclasses.replace(st, out_dir=out_dir)
    log_path = os.path.join(out_dir, 'gpu_check.log')
    with open(log_path, 'w') as f:
        f.write(f'gpu_check {" ".join(argv if argv is not None else sys.argv[1:])}\n')
    start = time.monotonic()
    report = Report(os.path.join(out_dir, 'gpu_check.json'), meta=dict(
        mode='quick' if st.quick else 'full', date=datetime.datetime.now(datetime.timezone.utc).strftime(
            '%Y-%m-%d %H:%M UTC'), torch=torch.__version__, python=platform.python_version(),
        cpu=_cpu_name(), cpu_count=os.cpu_count(), commit=_git_commit(), budget_s=st.budget,
        sections=[s.name for s in chosen], complete=False))
    report.plan([row for section in chosen for row in section.rows] + plan.derived_rows(st))
    show = _print_row(start)
    for section in chosen:
        if section.name in unavailable:
            for row in section.rows:
                report.update(Row(row.key, row.label, row.unit, status=SKIPPED, reason='needs python module(s) '
                                  f"{', '.join(unavailable[section.name])}, not installed: put the wheels in .whl/ "
                                  '(benchmarks/gpu_check.sh --fetch-wheels where PyPI is reachable)'))
                show(report.get(row.key))
    print(f'gpu_check: {len(chosen)} sections, budget {st.budget:.0f} s; rows -> {report.json_path}, '
          f'section output -> {log_path}', flush=True)
    runnable = plan.fit_caps([s for s in chosen if s.name not in unavailable], st)
    print('\n'.join(plan.describe_plan(runnable, st)), flush=True)
    runner.run_all(runnable, st, report, start + st.budget, log_path, show,
                   on_section=lambda s, cap: print(f'[{time.monotonic() - start:6.1f} s] section {s.name} '
                                                   f'(at most {cap:.0f} s)', flush=True))
    derive(st, report)
    report.update_meta(elapsed_s=round(time.monotonic() - start, 1), complete=True)
    text = header(report, st) + '\n\n' + report.table()
    with open(os.path.join(out_dir, 'gpu_check.md'), 'w') as f:
        f.write(text + '\n')
    print('\n' + text, flush=True)
    counts: Dict[str, int] = report.counts()
    print(f"\n{counts[OK]} ok, {counts[FAILED]} FAILED, {counts[SKIPPED]} SKIPPED, {counts[PENDING]} not run",
          flush=True)
    return 0 if counts[OK] == len(report.rows) else 1


if __name__ == '__main__':
    sys.exit(main())
