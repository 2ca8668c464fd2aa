"""Rows of the GPU check, the JSON file that is rewritten after every row, and the printed table.

Every row the run plans is in the file from the start as ``pending``, so a run stopped from outside (the
device's time limit) still returns a file that says which rows were measured and which were never reached.
A row that ran and failed is ``FAILED`` with a one-line reason; one that was not started because the time
budget was spent is ``SKIPPED`` with the reason. Values are plain floats; ``None`` where not measured.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Dict, Iterable, List, Optional

OK, FAILED, SKIPPED, PENDING = 'ok', 'FAILED', 'SKIPPED', 'pending'
STATUSES = (OK, FAILED, SKIPPED, PENDING)


@dataclasses.dataclass
class Row:
    """One line of the table.

    Args:
        key: unique id, e.g. ``speed.T.bf16.train`` (tests and derived rows look rows up by it).
        label: what the table prints in its first column.
        unit: unit of ``ours`` and ``reference`` (the ratio column is ``ours / reference``).
        ours: the value for ``models/`` (or the only value of a row that compares nothing).
        reference: the value for the reference implementation, where the row compares the two.
        status: ``ok``, ``FAILED``, ``SKIPPED`` or ``pending``.
        reason: one line saying why a row FAILED or was SKIPPED.
        note: anything else worth printing (settings, secondary figures).
    """

    key: str
    label: str
    unit: str = ''
    ours: Optional[float] = None
    reference: Optional[float] = None
    status: str = PENDING
    reason: str = ''
    note: str = ''

    @property
    def ratio(self) -> Optional[float]:
        if self.ours is None or self.reference is None or self.reference == 0:
            return None
        return self.ours / self.reference

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data['ratio'] = self.ratio
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'Row':
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message`` (what a FAILED row says)."""
    text = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {text[0][:300]}' if text else type(exc).__name__


def format_value(value: Optional[float]) -> str:
    if value is None:
        return ''
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return '0'
    if abs(value) < 1e-2:
        return f'{value:.1e}'
    if abs(value) >= 1000:
        return f'{value:.0f}'
    return f'{value:.3g}' if abs(value) < 10 else f'{value:.1f}'


class Report:
    """The rows of one run, in plan order, written to ``json_path`` after every change.

    Args:
        json_path: the JSON file (written atomically: a reader never sees half a file).
        meta: run-level facts (mode, GPU, versions, date, settings); ``update_meta`` adds more.
    """

    def __init__(self, json_path: str, meta: Dict[str, Any]) -> None:
        self.json_path = json_path
        self.meta = dict(meta)
        self.rows: Dict[str, Row] = {}

    def plan(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.rows.setdefault(row.key, row)
        self.write()

    def update(self, row: Row) -> None:
        if row.status not in STATUSES:
            raise ValueError(f'row {row.key}: unknown status {row.status!r}')
        if row.status == OK and not all(v is None or math.isfinite(v) for v in (row.ours, row.reference)):
            row = dataclasses.replace(row, status=FAILED, reason=f'non-finite value ({row.ours}, {row.reference})')
        self.rows[row.key] = row
        self.write()

    def update_meta(self, **items: Any) -> None:
        self.meta.update(items)
        self.write()

    def get(self, key: str) -> Optional[Row]:
        return self.rows.get(key)

    def pending(self, keys: Iterable[str]) -> List[Row]:
        return [self.rows[k] for k in keys if k in self.rows and self.rows[k].status == PENDING]

    def counts(self) -> Dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for row in self.rows.values():
            out[row.status] += 1
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {'meta': self.meta, 'counts': self.counts(), 'rows': [r.to_dict() for r in self.rows.values()]}

    def write(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.json_path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.gpu_check.', suffix='.json', dir=folder)
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(self.to_dict(), f, indent=1, allow_nan=True)
            os.replace(tmp, self.json_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def table(self) -> str:
        """The Markdown table: one line per row; the ratio column is models/ divided by the reference."""
        lines = ['| measurement | unit | models/ | reference | models/ ÷ reference | note |',
                 '|---|---|---:|---:|---:|---|']
        for row in self.rows.values():
            if row.status == OK:
                ours, ref = format_value(row.ours), format_value(row.reference)
                ratio = f'{row.ratio:.2f}x' if row.ratio is not None else ''
                note = row.note
            else:
                word = 'not run' if row.status == PENDING else row.status
                ours, ref, ratio = word, '', ''
                note = '; '.join(t for t in (row.reason or ('the run stopped before this row'
                                                            if row.status == PENDING else ''), row.note) if t)
            lines.append(f'| {row.label} | {row.unit} | {ours} | {ref} | {ratio} | {note.replace("|", "/")} |')
        return '\n'.join(lines)


def load_rows(json_path: str) -> Dict[str, Row]:
    """The rows of a written report, by key (tests, and reading back a device run)."""
    with open(json_path) as f:
        data = json.load(f)
    return {r['key']: Row.from_dict(r) for r in data['rows']}
