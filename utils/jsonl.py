"""Reading JSON-lines files (``metrics.jsonl``) that a killed writer may have left with a torn last line.

The trainer rewrites ``metrics.jsonl`` atomically (whole lines only), but a file written by an older version,
copied while being written, or edited by hand can end in a partial line: it is skipped with a warning instead
of failing the reader with ``JSONDecodeError``. A bad line elsewhere is an error naming the file and line.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

_logger = logging.getLogger(__name__)


def read_jsonl(path: str, logger: Optional[logging.Logger] = None) -> List[Dict[str, Any]]:
    """The JSON objects of ``path``, one per line ([] when the file does not exist).

    A last line that does not parse (a torn write) is skipped with a warning; a bad line before it raises
    ``ValueError`` naming ``path:line``."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().split('\n')
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records: List[Dict[str, Any]] = []
    for position, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError('not a JSON object')
        except ValueError as e:
            if position == len(numbered) - 1:
                (logger or _logger).warning(f'{path}:{number}: skipping a torn last line ({len(line)} characters, '
                                            'written by a process that was killed?)')
                break
            raise ValueError(f'{path}:{number}: not a JSON object per line ({e})') from None
        records.append(record)
    return records
