"""Writing checkpoints: plain data only, atomic files, and one commit point per epoch.

A checkpoint holds only tensors and plain Python values (so it loads with ``weights_only=True``: the config is
YAML text, RNG states are tensors and lists). An epoch is saved once, in this order:

1. ``last.pth`` is written to a temporary file, fsynced and renamed: **the commit point** of the epoch;
2. it is published by hard links as ``ckpt_epoch_N.pth`` (every ``SAVE_FREQ`` epochs and at the last one) and
   as ``best.pth`` (when validation improved on ``best.pth``'s own accuracy);
3. the epoch's line is added to ``metrics.jsonl`` (rewritten atomically: whole lines only).

Steps 2 and 3 are derived from the committed ``last.pth`` alone (it carries the epoch's metrics line and
whether it is the best), so a process killed between them leaves nothing inconsistent that the next start
cannot finish: :func:`complete_epoch_files` redoes them from ``last.pth`` before training resumes. A kill
before the rename leaves the previous epoch's files untouched. The original wrote ``ckpt_epoch_N.pth`` with
``torch.save`` in place, before validation, with a pickled config.

A full disk while writing raises :class:`DiskFullError` (one line: the folder, the space needed and free, or that
no inode is left; also for torch.save's "unexpected pos", its report of a short write); the temporary file is
removed and the files already there are untouched.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch

from engine.checkpoint.loading import CheckpointError, PathLike, load_checkpoint_mapped
from utils.fs import atomic_write, no_space_message, publish_file, remove_stale_temp_files
from utils.jsonl import read_jsonl

_logger = logging.getLogger(__name__)

_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.Size, torch.dtype,
                 torch.device)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back (numpy arrays, CfgNodes, ...)."""
    kind = type(obj)
    if kind in (dict, collections.OrderedDict):
        for k, v in obj.items():
            _check_plain(k, f'{where} key {k!r}')
            _check_plain(v, f'{where}[{k!r}]')
    elif kind in (list, tuple, set, frozenset):
        for i, v in enumerate(obj):
            _check_plain(v, f'{where}[{i}]')
    elif not (kind in _PLAIN_LEAVES or isinstance(obj, torch.Tensor)):
        raise CheckpointError(
            f'cannot save {where}: a {kind.__module__}.{kind.__qualname__}; checkpoints hold only tensors and '
            f'plain Python values so that they load with weights_only=True')


# Test hook: ``VFN_TEST_KILL_AT=POINT`` or ``POINT@N`` makes the process SIGKILL itself the first (N-th) time it
# passes POINT, e.g. ``written:last.pth`` (temporary file complete, not renamed), ``committed:last.pth``,
# ``published:best.pth``, ``published:ckpt_epoch_0.pth``, ``written:metrics.jsonl``. Only the hostile tests set it.
KILL_AT_ENV = 'VFN_TEST_KILL_AT'
_passed: Dict[str, int] = collections.Counter()
METRICS_FILE = 'metrics.jsonl'


def kill_point(name: str) -> None:
    """SIGKILL this process here when :data:`KILL_AT_ENV` names this point (tests of the commit protocol)."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    point, _, count = spec.partition('@')
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class DiskFullError(CheckpointError):
    """No space left (or quota exceeded) while writing into the output folder; nothing was replaced."""


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested containers): about the size of its checkpoint file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


@contextlib.contextmanager
def disk_full_as_error(folder: str, needed: int) -> Iterator[None]:
    """Turn a failure for want of space inside (ENOSPC, EDQUOT, no free inodes, or torch.save's short write
    "unexpected pos", which hides the errno) into one :class:`DiskFullError` naming ``folder`` and the space."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        reason = no_space_message(folder, needed, e)
        if reason is None:
            raise
        raise DiskFullError(f'{reason} while writing a checkpoint; the files already there are intact: free space '
                            'and rerun the same command to continue') from None


def save_checkpoint(path: PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the file is either the previous one or the complete new one.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then renamed over ``path``
    (``os.replace``) and the folder is fsynced. A failure while writing removes the temporary file (a full disk
    becomes :class:`DiskFullError`); one left by a killed process is removed on the next save. ``state`` may
    hold only tensors and plain Python values.
    """
    path = os.fspath(path)
    _check_plain(dict(state), 'state')
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temp_files(path)

    def write(f: Any) -> None:
        torch.save(dict(state), f)
        kill_point(f'written:{name}')

    with disk_full_as_error(folder, _nbytes(state) + 2**20):
        atomic_write(path, write)
    kill_point(f'committed:{name}')


def checkpoint_names(epoch: int, total_epochs: int, save_freq: int, improved: bool) -> List[str]:
    """File names a completed ``epoch`` is saved under: ``last.pth`` first (the commit point), then the names
    it is published under: ``ckpt_epoch_N.pth`` when due, ``best.pth`` when validation improved."""
    names = ['last.pth']
    if (save_freq > 0 and epoch % save_freq == 0) or epoch == total_epochs - 1:
        names.append(f'ckpt_epoch_{epoch}.pth')
    if improved:
        names.append('best.pth')
    return names


def write_checkpoint(output_dir: str, names: List[str], state: Mapping[str, Any]) -> List[str]:
    """Write ``state`` once under ``names[0]`` and publish it under the other names (in order)."""
    paths = [os.path.join(output_dir, name) for name in names]
    save_checkpoint(paths[0], state)
    with disk_full_as_error(output_dir, _nbytes(state)):  # a copy where hard links are not supported
        for name, path in zip(names[1:], paths[1:]):
            remove_stale_temp_files(path)
            publish_file(paths[0], path)
            kill_point(f'published:{name}')
    _logger.info(f"saved {', '.join(paths)}")
    return paths


# ------------------------------------------------------------------------------------------ metrics.jsonl
def read_metrics(output_dir: str, logger: Optional[logging.Logger] = None) -> List[Dict[str, Any]]:
    """The records of ``output_dir/metrics.jsonl`` ([] when absent); a torn line is skipped with a warning."""
    return read_jsonl(os.path.join(output_dir, METRICS_FILE), logger or _logger)


def write_metrics(output_dir: str, records: List[Dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` with ``records``, atomically (a reader sees whole lines only, old or new)."""
    path = os.path.join(output_dir, METRICS_FILE)
    remove_stale_temp_files(path)
    text = ''.join(json.dumps(record) + '\n' for record in records).encode('utf-8')

    def write(f: Any) -> None:
        f.write(text)
        kill_point(f'written:{METRICS_FILE}')

    with disk_full_as_error(output_dir, len(text)):
        atomic_write(path, write)


def append_metrics(output_dir: str, record: Dict[str, Any], logger: Optional[logging.Logger] = None) -> None:
    """Add the line of ``record['epoch']`` to ``metrics.jsonl``, replacing a line of that epoch or later."""
    kept = [r for r in read_metrics(output_dir, logger) if _epoch_of(r) < record['epoch']]
    write_metrics(output_dir, kept + [record])


def _epoch_of(record: Dict[str, Any]) -> int:
    epoch = record.get('epoch')
    return epoch if isinstance(epoch, int) else -1


# ------------------------------------------------------------------------------------------ after a kill
def recorded_accuracy(checkpoint: Mapping[str, Any]) -> Optional[float]:
    """The validation top-1 of the weights in ``checkpoint`` (its epoch's line; else ``max_accuracy``, which is
    that figure for a ``best.pth`` of older versions and of the original code)."""
    record = checkpoint.get('epoch_record')
    if isinstance(record, Mapping) and isinstance(record.get('val_acc1'), (int, float)):
        return float(record['val_acc1'])
    value = checkpoint.get('max_accuracy')
    return float(value) if isinstance(value, (int, float)) else None


def read_best(output_dir: str) -> Dict[str, Any]:
    """What ``output_dir/best.pth`` holds: ``{'exists', 'accuracy', 'epoch', 'problem'}`` (accuracy None when
    it is absent or unreadable; ``problem`` says why it is unreadable)."""
    path = os.path.join(output_dir, 'best.pth')
    info: Dict[str, Any] = {'exists': os.path.exists(path), 'accuracy': None, 'epoch': None, 'problem': ''}
    if not info['exists']:
        return info
    try:
        checkpoint = load_checkpoint_mapped(path)
    except (CheckpointError, OSError) as e:
        info['problem'] = str(e)
        return info
    info['accuracy'] = recorded_accuracy(checkpoint)
    info['epoch'] = checkpoint.get('epoch')
    return info


def complete_epoch_files(output_dir: str, source: str, checkpoint: Mapping[str, Any], total_epochs: int,
                         save_freq: int, logger: Optional[logging.Logger] = None) -> List[str]:
    """Finish the files of the epoch ``checkpoint`` committed, as a save that was killed after the commit would
    have; returns what was redone (``[]`` when everything was in place). Call on rank 0 before training resumes.

    * ``metrics.jsonl``: lines of later (uncommitted) epochs are dropped, a torn last line is dropped, and the
      committed epoch's line is restored from the checkpoint when it is missing;
    * when ``source`` is ``output_dir/last.pth`` saved at an epoch end: ``ckpt_epoch_N.pth`` is published when
      due and missing or of another epoch, and ``best.pth`` when the epoch was the best and ``best.pth`` is
      missing or holds a lower accuracy (a better ``best.pth`` is never replaced).
    """
    log = logger or _logger
    epoch = int(checkpoint.get('epoch', -1))
    record = checkpoint.get('epoch_record')
    redone: List[str] = []
    path = os.path.join(output_dir, METRICS_FILE)
    raw = open(path, 'rb').read() if os.path.isfile(path) else b''
    records = read_metrics(output_dir, log)
    kept = [r for r in records if _epoch_of(r) <= epoch]
    if isinstance(record, Mapping) and epoch >= 0 and not any(_epoch_of(r) == epoch for r in kept):
        kept.append(dict(record))
        redone.append(f'metrics.jsonl line of epoch {epoch}')
    expected = ''.join(json.dumps(r) + '\n' for r in kept).encode('utf-8')
    if raw != expected and (raw or kept):
        if len(kept) < len(records):
            redone.append(f'{len(records) - len(kept)} metrics.jsonl line(s) of epochs after {epoch} dropped')
        write_metrics(output_dir, kept)
    last = os.path.join(output_dir, 'last.pth')
    at_epoch_end = not int(checkpoint.get('epoch_step', 0) or 0)
    if epoch >= 0 and at_epoch_end and os.path.abspath(source) == os.path.abspath(last):
        names = checkpoint_names(epoch, total_epochs, save_freq, bool(checkpoint.get('is_best')))[1:]
        for name in names:
            target = os.path.join(output_dir, name)
            if name == 'best.pth':
                best, own = read_best(output_dir), recorded_accuracy(checkpoint)
                if best['accuracy'] is not None and own is not None and best['accuracy'] >= own:
                    continue  # this epoch's (already published) or a better one
            elif os.path.exists(target) and os.path.samefile(target, last):
                continue
            with disk_full_as_error(output_dir, _nbytes(checkpoint)):
                publish_file(last, target)
            redone.append(name)
    if redone:
        log.warning(f'{output_dir}: the save of epoch {epoch} was interrupted after last.pth was committed; '
                    f'completed: {", ".join(redone)}')
    return redone
