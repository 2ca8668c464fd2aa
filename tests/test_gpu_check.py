"""The GPU check (benchmarks/gpu_check.sh): its ``--quick`` CPU run end to end, so that the script cannot rot
before a GPU is lent, and the parts that decide what the GPU run reports (batch search, time caps of the
sections, the incrementally written JSON) on their own."""
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks.gpucheck import plan
from benchmarks.gpucheck.batch_search import largest_fitting
from benchmarks.gpucheck.report import FAILED, OK, PENDING, SKIPPED, Report, Row, load_rows
from benchmarks.gpucheck.runner import run_all, run_section

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, 'benchmarks', 'gpu_check.sh')


# --- batch search ---------------------------------------------------------------------------------------

def _fits_below(limit, calls):
    def fits(batch):
        calls.append(batch)
        return batch <= limit
    return fits


def test_batch_search_doubles_then_bisects_to_the_precision():
    calls = []
    lo, hi, why = largest_fitting(_fits_below(300, calls), start=8, cap=2048, precision=1 / 16)
    assert why == 'bracketed'
    assert calls[:7] == [8, 16, 32, 64, 128, 256, 512]   # doubling until the first failure
    assert lo <= 300 < hi and hi - lo <= max(1, lo // 16)
    assert all(b in calls for b in (lo, hi))


def test_batch_search_exact_with_precision_zero():
    lo, hi, why = largest_fitting(_fits_below(37, []), start=1, cap=1000, precision=0)
    assert (lo, hi, why) == (37, 38, 'bracketed')


def test_batch_search_stops_at_the_cap_and_when_nothing_fits():
    calls = []
    assert largest_fitting(_fits_below(10 ** 6, calls), start=8, cap=100, precision=0.1) == (100, None, 'cap')
    assert calls == [8, 16, 32, 64, 100]
    lo, hi, why = largest_fitting(_fits_below(5, []), start=8, cap=64, precision=0)
    assert (lo, hi, why) == (5, 6, 'bracketed')  # the start failed: bisected below it
    assert largest_fitting(_fits_below(0, []), start=8, cap=64, precision=0)[0] == 0


def test_batch_search_stops_when_time_is_up():
    calls = []
    lo, hi, why = largest_fitting(_fits_below(300, calls), start=8, cap=2048, precision=0,
                                  out_of_time=lambda: len(calls) >= 3)
    assert (lo, hi, why) == (32, None, 'time')


def test_batch_search_rejects_a_bad_range():
    with pytest.raises(ValueError, match='start'):
        largest_fitting(lambda b: True, start=0, cap=8, precision=0)


# --- report ---------------------------------------------------------------------------------------------

def test_report_writes_every_change_and_marks_non_finite_values(tmp_path):
    path = str(tmp_path / 'r.json')
    report = Report(path, {'mode': 'test'})
    report.plan([Row('a', 'row a', 'clips/s'), Row('b', 'row b', 's')])
    assert {k: r.status for k, r in load_rows(path).items()} == {'a': PENDING, 'b': PENDING}
    report.update(Row('a', 'row a', 'clips/s', ours=3.0, reference=2.0, status=OK))
    report.update(Row('b', 'row b', 's', ours=float('nan'), status=OK))
    rows = load_rows(path)
    assert rows['a'].status == OK and rows['a'].ratio == 1.5
    assert rows['b'].status == FAILED and 'non-finite' in rows['b'].reason
    table = report.table()
    assert '| row a | clips/s | 3 | 2 | 1.50x |' in table and '| row b | s | FAILED |' in table


def test_every_planned_row_has_a_unique_key():
    for st in (plan.quick_settings(), plan.full_settings()):
        keys = [r.key for s in plan.sections(st) for r in s.rows] + [r.key for r in plan.derived_rows(st)]
        assert len(keys) == len(set(keys))
    with pytest.raises(ValueError, match='unknown section'):
        plan.select(plan.sections(plan.quick_settings()), ['model:X'], None)


# --- the plan: caps that fit the budget on an H100 -----------------------------------------------------

def _h100_settings(gpus):
    """The full run as an H100 machine with a 16-core host plans it (this test machine has other core counts)."""
    import dataclasses
    return dataclasses.replace(plan.full_settings(540., gpus), loader_workers=16)


@pytest.mark.parametrize('gpus', [1, 2, 8])
def test_the_h100_plan_fits_the_budget_with_margin_in_order_of_need(gpus):
    from benchmarks.gpucheck.costs import H100, MIN_MARGIN, PARENT_RESERVE_S, estimate
    st = _h100_settings(gpus)
    chosen = plan.sections(st)
    assert sum(s.cap for s in chosen) <= st.budget - PARENT_RESERVE_S + len(chosen)   # rounding to whole seconds
    for section in chosen:   # every section can run MIN_MARGIN times slower than estimated and still finish
        assert section.cap >= MIN_MARGIN * estimate(section, st, H100) - 1, section.name
        assert section.min_time <= section.cap
    names = [s.name for s in chosen]
    two_ranks = 'ddp2' if gpus >= 2 else 'ddp'
    assert names == ['model:T', 'toy', two_ranks, 'loader', 'model:B', 'batch:T', 'compile:train', 'model:S',
                     'compile:infer']
    if gpus >= 2:   # a real NCCL run on 2 GPUs: train, resume, 4x3 evaluation
        section = chosen[2]
        assert section.target == 'toy_run:run_two_gpus'
        assert [r.key for r in section.rows] == ['ddp2.train', 'ddp2.resume', 'ddp2.eval']
    rows = [r.key for s in chosen for r in s.rows] + [r.key for r in plan.derived_rows(st)]
    assert 'ckpt.B.write' in rows and 'loader.per_gpu' in rows


def test_the_step_costs_of_the_plan_are_the_models_flop_counts():
    from benchmarks.gpucheck.costs import GMACS_PER_VIEW, PARAMS_MILLIONS
    from models import VideoFocalNet
    from tools.flops import count_gmacs, count_params
    for size in plan.PUBLISHED[::2]:   # T and B: the cheapest and the dearest
        with torch.device('meta'):
            model = VideoFocalNet(num_classes=400, num_frames=8, img_size=224, **size.kwargs())
        assert abs(count_gmacs(model, (1, 8, 3, 224, 224)) - GMACS_PER_VIEW[size.name]) < 0.1
        assert abs(count_params(model) / 1e6 - PARAMS_MILLIONS[size.name]) < 0.1


def test_the_plan_is_printed_before_anything_runs_and_a_rerun_of_some_sections_gets_the_budget(capsys):
    from benchmarks.gpu_check import main
    assert main(['--quick', '--list', '--only', 'model:T,loader', '--budget', '200']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('plan:')]
    assert '2 sections' in lines[0] and 'of the 200 s budget' in lines[0]
    caps = {line.split()[1]: float(line.split()[-2]) for line in lines[1:]}
    assert list(caps) == ['model:T', 'loader'] and 170 <= sum(caps.values()) <= 182


def test_time_an_early_section_left_unused_goes_to_the_next(tmp_path):
    report = Report(str(tmp_path / 'r.json'), {})
    fast = plan.Section('fast', 'tests.test_gpu_check:section_ok', '', (Row('t.first', 'first'),
                                                                         Row('t.second', 'second')), 40., 0.)
    later = plan.Section('later', 'tests.test_gpu_check:section_ok', '', (), 5., 0.)
    report.plan(fast.rows)
    caps = []
    run_all([fast, later], plan.quick_settings(), report, time.monotonic() + 50, None, lambda r: 0,
            on_section=lambda s, cap: caps.append((s.name, cap)))
    # the first may use all but what the later one needs; the later one gets what the first left unused
    assert caps[0][0] == 'fast' and 44 < caps[0][1] <= 45
    assert caps[1][0] == 'later' and caps[1][1] > 30


@pytest.mark.parametrize('driver, cuda, words', [
    ('550.54.15', '13.0', ['driver 550.54.15 is older than the 580.65.06', 'CUDA 13.0 build']),
    ('580.95.05', '13.0', ['no CUDA device is visible', 'driver 580.95.05']),
    ('', '13.0', ['no NVIDIA driver found']),
])
def test_without_a_usable_gpu_the_check_says_whether_the_driver_is_too_old(driver, cuda, words):
    from benchmarks.gpu_check import no_cuda_message
    message = no_cuda_message(driver, '2.14.1+cu130', cuda)
    assert all(w in message for w in words) and '\n' not in message


def test_loader_share_per_gpu_and_the_starvation_ratio_use_it(tmp_path):
    import dataclasses
    from benchmarks.gpu_check import derive
    st = dataclasses.replace(plan.full_settings(540., gpus=4), loader_workers=32)
    report = Report(str(tmp_path / 'r.json'), {})
    report.plan(plan.derived_rows(st) + [Row('loader.train', 'l'), Row('speed.T.fp16.train', 't')])
    report.update(Row('loader.train', 'l', 'clips/s', ours=400., status=OK))
    report.update(Row('speed.T.fp16.train', 't', 'clips/s', ours=50., status=OK))
    derive(st, report)
    assert report.get('loader.per_gpu').ours == 100. and 'NUM_WORKERS 7' in report.get('loader.per_gpu').note
    assert report.get('starve.T').ours == 2.


# --- sections in child processes ------------------------------------------------------------------------

def section_two_rows_then_fail(st, out, deadline, arg):
    out.ok('t.first', 1.0)
    raise RuntimeError('broken on purpose\nsecond line')


def section_hangs(st, out, deadline, arg):
    out.ok('t.first', 2.0)
    time.sleep(60)


def section_crashes(st, out, deadline, arg):
    os._exit(7)


def _section(target, cap=30., min_time=0.):
    rows = (Row('t.first', 'first'), Row('t.second', 'second'))
    return plan.Section('t', f'tests.test_gpu_check:{target}', '', rows, cap, min_time)


@pytest.mark.parametrize('target, reason', [
    ('section_two_rows_then_fail', 'RuntimeError: broken on purpose'),
    ('section_crashes', 'the section process exited with code 7'),
])
def test_rows_a_section_did_not_produce_become_failed_with_its_reason(tmp_path, target, reason):
    report = Report(str(tmp_path / 'r.json'), {})
    section = _section(target)
    report.plan(section.rows)
    run_section(section, plan.quick_settings(), report, cap=30., log_path=str(tmp_path / 'log'), on_row=lambda r: 0)
    rows = load_rows(report.json_path)
    if target == 'section_two_rows_then_fail':
        assert rows['t.first'].status == OK and rows['t.first'].ours == 1.0
    assert rows['t.second'].status == FAILED and rows['t.second'].reason == reason


def test_a_section_past_its_cap_is_stopped_and_keeps_its_rows(tmp_path, monkeypatch):
    monkeypatch.setattr('benchmarks.gpucheck.runner.GRACE_S', 0.5)
    report = Report(str(tmp_path / 'r.json'), {})
    section = _section('section_hangs')
    report.plan(section.rows)
    start = time.monotonic()
    run_section(section, plan.quick_settings(), report, cap=3., log_path=None, on_row=lambda r: 0)
    assert time.monotonic() - start < 20
    assert report.get('t.first').status == OK
    assert report.get('t.second').status == FAILED and 'ran out of its 3 s' in report.get('t.second').reason


def test_a_section_is_not_started_without_enough_budget(tmp_path):
    report = Report(str(tmp_path / 'r.json'), {})
    section = _section('section_hangs', min_time=50.)
    report.plan(section.rows)
    run_all([section], plan.quick_settings(), report, time.monotonic() + 10, None, lambda r: 0)
    assert {r.status for r in report.rows.values()} == {SKIPPED}
    assert 'not started' in report.get('t.first').reason


# --- the --quick run end to end -------------------------------------------------------------------------

def test_command_line(tmp_path, capsys):
    from benchmarks.gpu_check import main
    assert main(['--quick', '--list']) == 0
    assert 'model:T: parity.T.logits' in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(['--only', 'nope'])
    assert e.value.code == 2 and "unknown section 'nope'" in capsys.readouterr().err
    if not torch.cuda.is_available():  # the full run needs a GPU and says so
        assert main(['--out', str(tmp_path)]) == 2
        assert 'no CUDA device is visible' in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_produces_every_row(tmp_path):
    out = tmp_path / 'out'
    # a generous budget: on an idle 2-core machine the run takes about a minute and a half; on a loaded
    # one a tight budget would skip sections, which is the budget working, not the script breaking
    proc = subprocess.run(['bash', SCRIPT, '--quick', '--budget', '900', '--out', str(out)], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=1200)
    with open(out / 'gpu_check.json') as f:
        data = json.load(f)
    rows = {r['key']: r for r in data['rows']}
    st = plan.quick_settings()
    planned = [r.key for s in plan.sections(st) for r in s.rows] + [r.key for r in plan.derived_rows(st)]
    assert sorted(rows) == sorted(planned)
    bad = {k: (r['status'], r['reason']) for k, r in rows.items() if r['status'] != OK}
    assert not bad, f'{bad}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key, row in rows.items():
        assert row['ours'] is not None and math.isfinite(row['ours']), key
        assert row['reference'] is None or math.isfinite(row['reference']), key
    for size in ('T', 'S', 'B'):
        assert rows[f'parity.{size}.logits']['ours'] < 1e-4
        assert rows[f'parity.{size}.grads']['ours'] < 1e-3
        for dtype in plan.DTYPES:
            assert rows[f'speed.{size}.{dtype}.train']['reference'] > 0
    assert 0 <= rows['toy.eval']['ours'] <= 100
    assert data['meta']['complete'] and data['meta']['mode'] == 'quick'
    table = (out / 'gpu_check.md').read_text()
    assert table.count('\n| ') == len(planned) + 1 and 'FAILED' not in table
    plan_lines = [line for line in proc.stdout.splitlines() if line.startswith('plan:')]
    first_section = next(i for i, line in enumerate(proc.stdout.splitlines()) if ' section model:T ' in line)
    assert len(plan_lines) == 1 + len(plan.sections(st)) and proc.stdout.splitlines().index(plan_lines[-1]) < first_section


# --- sections that cannot run, stopping torchrun, the model benchmark's memory child ----------------------

def section_ok(st, out, deadline, arg):
    out.ok('t.first', 1.0)
    out.ok('t.second', 2.0)


def test_a_section_needing_a_missing_module_is_skipped_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    from benchmarks import gpu_check
    needs_missing = plan.Section('needs', 'tests.test_gpu_check:section_ok', '', (Row('n.row', 'row'),), 30, 0,
                                 needs=('no_such_module_for_gpu_check',))
    runs = _section('section_ok')
    monkeypatch.setattr(plan, 'sections', lambda st: [needs_missing, runs])
    monkeypatch.setattr(plan, 'derived_rows', lambda st: [])
    code = gpu_check.main(['--quick', '--out', str(tmp_path)])
    captured = capsys.readouterr()
    rows = load_rows(str(tmp_path / 'gpu_check.json'))
    assert rows['n.row'].status == SKIPPED and 'no_such_module_for_gpu_check' in rows['n.row'].reason
    assert rows['t.first'].status == OK and rows['t.second'].status == OK
    assert 'warning: section needs skipped' in captured.err
    assert code == 1  # not every row was measured
    assert gpu_check.missing_modules([runs, needs_missing]) == {'needs': ['no_such_module_for_gpu_check']}


def test_only_main_py_and_loader_sections_need_the_wheels():
    needs = {s.name: s.needs for s in plan.sections(plan.quick_settings())}
    assert needs['toy'] == needs['ddp'] == plan.MAIN_PY_MODULES and needs['loader'] == ('av',)
    assert all(not needs[name] for name in needs if name.split(':')[0] in ('model', 'batch', 'compile'))


LAUNCHER = '''
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)          # a launcher that does not stop on SIGTERM
worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)
print(worker.pid, flush=True)
time.sleep(120)
'''


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='needs /proc')
def test_a_timed_out_launcher_and_its_workers_in_other_sessions_are_stopped(tmp_path):
    from benchmarks.gpucheck.toy_run import stop_launcher
    proc = subprocess.Popen([sys.executable, '-c', LAUNCHER], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    worker = int(proc.stdout.readline())
    assert _alive(worker) and os.getsid(worker) != os.getsid(proc.pid)  # out of reach of the launcher's group
    start = time.monotonic()
    stop_launcher(proc, grace=1.0)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.returncode is not None and not _alive(worker)
    assert time.monotonic() - start < 10


@pytest.mark.slow
def test_model_benchmark_runs_as_a_module_from_the_repository_root():
    """Its CPU memory figures come from a child process, which must find the ``benchmarks`` package."""
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.model', '--embed-dim', '8', '--depths', '1', '1', '1', '1',
                           '--batch', '1', '--frames', '2', '--size', '32', '--reps', '1', '--warmup', '0',
                           '--skip-baselines', '--threads', '1', '--max-retries', '0'],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = [line for line in proc.stdout.splitlines() if line.startswith('| training peak memory, MiB')]
    assert peak and 'nan' not in peak[0]


def test_selective_checkpointing_verdict_follows_the_documented_rule():
    from benchmarks.gpucheck.model_speed import selective_checkpointing_verdict
    keep = selective_checkpointing_verdict(1.03, 10.0, 14.0)
    assert 'keep TRAIN.SELECTIVE_CHECKPOINT True' in keep and '14.00 GiB' in keep
    off = selective_checkpointing_verdict(1.20, 10.0, 14.0)
    assert 'TRAIN.SELECTIVE_CHECKPOINT False is 20% faster' in off and '+4.00 GiB' in off
    assert '5%' in open(os.path.join(REPO, 'docs', 'gpu.md')).read()  # the rule the note applies
