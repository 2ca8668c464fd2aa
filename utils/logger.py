"""Logging: coloured console on rank 0, one log file per rank, optional TensorBoard scalars.

As in the original, every rank appends to ``OUTPUT/log_rank{r}.txt`` and rank 0 also prints to the
console with termcolor prefixes. Unlike the original:

* the handlers go on the root logger, so every module's ``logging.getLogger(__name__)`` lands in the same
  places, and TensorBoard scalars are written to ``OUTPUT/tensorboard`` (rank 0, ``TENSORBOARD: True``);
* the log file can be deferred (``defer_file=True``): records are kept in memory and written only once
  ``start_log_file`` is called, so a run that fails its start-up checks leaves no file in the run folder;
* records logged with ``extra=FILE_ONLY`` or inside ``with file_only():`` (the full config, the environment,
  the data lists' checksums) go to the file and not to the console, which gets a short summary;
* the console handler writes to whatever ``sys.stdout`` is at the time of each record, so a second run in
  the same process (tests, notebooks) never writes to a stream a previous caller has closed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator, List, Optional

try:
    from termcolor import colored
except ImportError:  # termcolor is a listed dependency; plain text if it is missing anyway
    def colored(text: str, *args, **kwargs) -> str:  # type: ignore[misc]
        return text

_FMT = '[%(asctime)s %(name)s] (%(filename)s %(lineno)d): %(levelname)s %(message)s'
_DATEFMT = '%Y-%m-%d %H:%M:%S'
_HANDLER_TAG = '_video_focalnet_handler'
FILE_ONLY = {'file_only': True}   # ``logger.info(..., extra=FILE_ONLY)``: the log file, not the console
_file_only_depth = 0


@contextlib.contextmanager
def file_only() -> Iterator[None]:
    """Records below WARNING logged inside go to the log file only (warnings still reach the console)."""
    global _file_only_depth
    _file_only_depth += 1
    try:
        yield
    finally:
        _file_only_depth -= 1


def _console_filter(record: logging.LogRecord) -> bool:
    if getattr(record, 'file_only', False):
        return False
    return not (_file_only_depth and record.levelno < logging.WARNING)


class _ColorFormatter(logging.Formatter):
    """The original's console format: green time/name, yellow file/line, red WARNING and above."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = colored(f"[{self.formatTime(record, _DATEFMT)} {record.name}]", 'green')
        where = colored(f"({record.filename} {record.lineno})", 'yellow')
        level = record.levelname
        if record.levelno >= logging.WARNING:
            level = colored(level, 'red')
        message = record.getMessage()
        if record.exc_info:
            message = message + '\n' + self.formatException(record.exc_info)
        return f"{prefix} {where}: {level} {message}"


class _StdoutHandler(logging.StreamHandler):
    """A StreamHandler on the current ``sys.stdout`` (looked up per record, never kept)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ / setStream assign it; the lookup wins
        pass


class DeferredFileHandler(logging.Handler):
    """Appends to ``path``, but only from ``start()`` on; records before that are kept and written then.

    A run whose start-up fails (a missing file, a bad checkpoint) never calls ``start()`` and so creates
    neither the file nor its folder."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._pending: List[logging.LogRecord] = []
        self._file: Optional[logging.FileHandler] = None
        self.setFormatter(logging.Formatter(_FMT, _DATEFMT))

    @property
    def started(self) -> bool:
        return self._file is not None

    def start(self) -> None:
        if self._file is not None:
            return
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        self._file = logging.FileHandler(self.path, mode='a')
        self._file.setFormatter(self.formatter)
        pending, self._pending = self._pending, []
        for record in pending:
            self._file.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.handle(record)
            return
        record.msg, record.args = record.getMessage(), None  # formatted now: the arguments may change later
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self._pending.append(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._pending = []
        super().close()


def _own_handlers() -> List[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, _HANDLER_TAG, False)]


def close_logging() -> None:
    """Remove and close the handlers ``setup_logging`` added (end of an in-process run)."""
    root = logging.getLogger()
    for handler in _own_handlers():
        root.removeHandler(handler)
        handler.close()


def start_log_file() -> None:
    """Open the deferred log file of ``setup_logging(..., defer_file=True)`` and write what was held back."""
    for handler in _own_handlers():
        if isinstance(handler, DeferredFileHandler):
            handler.start()


def setup_logging(output_dir: Optional[str], rank: int = 0, name: str = '',
                  level: int = logging.INFO, defer_file: bool = False) -> logging.Logger:
    """Configure the root logger for this process and return the logger ``name``.

    Calling it again (tests, a second run in one process) replaces the handlers it added before.

    Args:
        output_dir: folder of ``log_rank{rank}.txt``; None = console only.
        rank: process rank; only rank 0 logs to the console.
        name: name of the returned logger (the model name in the original).
        level: level of the root logger.
        defer_file: hold the file's records in memory until ``start_log_file()`` (nothing is created before).
    """
    root = logging.getLogger()
    root.setLevel(level)
    close_logging()
    if rank == 0:
        console = _StdoutHandler()
        console.setFormatter(_ColorFormatter())  # termcolor drops the colours when stdout is not a terminal
        console.addFilter(_console_filter)
        setattr(console, _HANDLER_TAG, True)
        root.addHandler(console)
    if output_dir:
        file_handler = DeferredFileHandler(os.path.join(output_dir, f'log_rank{rank}.txt'))
        if not defer_file:
            file_handler.start()
        setattr(file_handler, _HANDLER_TAG, True)
        root.addHandler(file_handler)
    # Third-party chatter that would drown the training log.
    for noisy in ('PIL', 'matplotlib', 'torch._dynamo', 'torch._inductor'):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return logging.getLogger(name or 'video_focalnet')


class TensorBoardWriter:
    """``SummaryWriter`` on rank 0 when enabled, a silent no-op otherwise.

    Args:
        log_dir: folder of the event files (``OUTPUT/tensorboard``).
        enabled: False on ranks other than 0 or when ``TENSORBOARD: False``.
    """

    def __init__(self, log_dir: str, enabled: bool = True) -> None:
        self._writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is a listed dependency; training goes on without it
                logging.getLogger(__name__).warning(f"TensorBoard disabled: {e}")
            else:
                self._writer = SummaryWriter(log_dir=log_dir)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalars(self, step: int, prefix: str = '', **values: float) -> None:
        """Write ``prefix/key = value`` for every keyword at ``step``; None values are skipped."""
        if self._writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self._writer.add_scalar(f"{prefix}/{key}" if prefix else key, float(value), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
