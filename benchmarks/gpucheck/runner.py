"""Each section in a child process with a time cap; rows stream back to the parent as they are measured.

Why a process per section: a CUDA error that poisons the context (an illegal access, an OOM inside a
library that does not recover), a segfault or a hung compile then costs that section's rows and nothing
else, and the parent can stop it when its time is up. The parent imports torch and the project once
and never touches CUDA, so children are forked (no second import, CUDA is first initialised in the child);
where forking is unsafe (CUDA already initialised, no ``fork``) they are spawned instead.

The child sends ``('row', dict)``, ``('meta', dict)`` and ``('error', text)`` messages through a pipe. After
the child ends, every row of its section that it did not send becomes FAILED with the reason: the
section's exception, its time-out, or its exit code.
"""
from __future__ import annotations

import dataclasses
import importlib
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from typing import Any, Callable, List, Optional

from .plan import Section, Settings
from .report import FAILED, OK, SKIPPED, Report, Row, one_line

GRACE_S = 10.0   # a child past its deadline gets this long to finish the row in flight before it is killed


class Channel:
    """What a section function reports through (``ok`` / ``failed`` / ``skipped`` rows, ``meta`` facts).

    ``send`` is the transport: a pipe's ``send`` in a child process, or any callable (tests collect into
    a list).
    """

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send

    def ok(self, key: str, ours: float, reference: Optional[float] = None, note: str = '') -> None:
        self._row(key, OK, ours=float(ours), reference=None if reference is None else float(reference), note=note)

    def failed(self, key: str, reason: str, note: str = '') -> None:
        self._row(key, FAILED, reason=reason, note=note)

    def skipped(self, key: str, reason: str) -> None:
        self._row(key, SKIPPED, reason=reason)

    def meta(self, **items: Any) -> None:
        self._send(('meta', items))

    def error(self, text: str) -> None:
        self._send(('error', text))

    def _row(self, key: str, status: str, **fields: Any) -> None:
        self._send(('row', dict(key=key, status=status, **fields)))


def resolve(target: str) -> Callable:
    """``'module:function'``: a module of this package, or any importable dotted module path."""
    module, name = target.split(':')
    return getattr(importlib.import_module(module if '.' in module else f'{__package__}.{module}'), name)


def _child_main(target: str, arg: str, settings: Settings, conn, deadline: float, log_path: Optional[str]) -> None:
    if log_path:  # the child's own output (warnings, main.py logs) goes to the log, the console keeps the rows
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    import torch
    # One intra-op thread: a forked child must not enter an OpenMP parallel region of the parent's pool
    # (libgomp hangs), and the sections' CPU work is either tiny (--quick) or in their own subprocesses.
    torch.set_num_threads(1)
    channel = Channel(conn.send)
    code = 0
    try:
        resolve(target)(settings, channel, deadline, arg)
    except BaseException as e:  # noqa: B902 - one line to the parent, the traceback to the log
        traceback.print_exc()
        channel.error(one_line(e))
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.close()
    os._exit(code)  # no atexit / CUDA teardown surprises in a forked child


def start_method() -> str:
    import torch
    if 'fork' in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized():
        return 'fork'
    return 'spawn'


def _exit_reason(code: Optional[int]) -> str:
    if code is None:
        return 'the section process did not exit'
    if code < 0:
        try:
            return f'the section process was killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'the section process was killed by signal {-code}'
    return f'the section process exited with code {code}'


def run_section(section: Section, settings: Settings, report: Report, cap: float, log_path: Optional[str],
                on_row: Callable[[Row], None]) -> None:
    """Run ``section`` in a child for at most ``cap`` seconds (plus ``GRACE_S``), filling ``report``."""
    planned = {r.key: r for r in section.rows}
    ctx = multiprocessing.get_context(start_method())
    receiver, sender = ctx.Pipe(duplex=False)
    deadline = time.monotonic() + cap
    proc = ctx.Process(target=_child_main, args=(section.target, section.arg, settings, sender, deadline, log_path),
                       name=f'gpu_check {section.name}')
    proc.start()
    sender.close()
    error = ''
    timed_out = False
    while True:
        left = deadline + GRACE_S - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        try:
            if not receiver.poll(min(left, 1.0)):
                if not proc.is_alive() and not receiver.poll(0):
                    break
                continue
            kind, data = receiver.recv()
        except (EOFError, OSError):
            break
        if kind == 'row':
            base = planned.get(data['key']) or report.get(data['key']) or Row(data['key'], data['key'])
            row = dataclasses.replace(base, **{k: v for k, v in data.items() if k != 'key'})
            report.update(row)
            on_row(report.get(row.key))
        elif kind == 'meta':
            report.update_meta(**data)
        elif kind == 'error':
            error = data
    if timed_out and proc.is_alive():
        proc.kill()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
    receiver.close()
    if timed_out:
        reason = f'not measured: the section ran out of its {cap:.0f} s (share of the time budget) and was stopped'
    else:
        reason = error or (_exit_reason(proc.exitcode) if proc.exitcode else 'the section did not produce this row')
    for row in report.pending(planned):
        report.update(dataclasses.replace(row, status=FAILED, reason=reason))
        on_row(report.get(row.key))


def run_all(sections: List[Section], settings: Settings, report: Report, budget_end: float,
            log_path: Optional[str], on_row: Callable[[Row], None],
            on_section: Callable[[Section, float], None] = lambda s, cap: None) -> None:
    """Run ``sections`` in order, each capped by its own cap and by what is left until ``budget_end``; time that
    earlier sections left unused goes to the next one, as long as the later ones keep their caps."""
    for i, section in enumerate(sections):
        left = budget_end - time.monotonic()
        later = sum(s.cap for s in sections[i + 1:])
        if left < section.min_time:
            for row in report.pending(r.key for r in section.rows):
                report.update(dataclasses.replace(
                    row, status=SKIPPED, reason=f'not started: {max(left, 0):.0f} s of the {settings.budget:.0f} s '
                    f'budget left, the section needs at least {section.min_time:.0f} s'))
                on_row(report.get(row.key))
            continue
        cap = min(max(section.cap, left - later), left)
        on_section(section, cap)
        wall, cpu = time.monotonic(), _children_cpu()
        run_section(section, settings, report, cap, log_path, on_row)
        # wall and CPU seconds (the section and every process it waited for): how a run fits its budget
        report.update_meta(section_seconds={**report.meta.get('section_seconds', {}), section.name: {
            'wall': round(time.monotonic() - wall, 1), 'cpu': round(_children_cpu() - cpu, 1)}})


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

