"""Logging: coloured console on rank 0, one log file per rank, optional TensorBoard scalars.

As in the original, every rank appends to ``OUTPUT/log_rank{r}.txt`` and rank 0 also prints to the
console with termcolor prefixes. Unlike the original, the handlers go on the root logger, so every
module's ``logging.getLogger(__name__)`` lands in the same places, and TensorBoard scalars are written
to ``OUTPUT/tensorboard`` (rank 0, ``TENSORBOARD: True``).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

try:
    from termcolor import colored
except ImportError:  # termcolor is a listed dependency; plain text if it is missing anyway
    def colored(text: str, *args, **kwargs) -> str:  # type: ignore[misc]
        return text

_FMT = '[%(asctime)s %(name)s] (%(filename)s %(lineno)d): %(levelname)s %(message)s'
_DATEFMT = '%Y-%m-%d %H:%M:%S'
_HANDLER_TAG = '_video_focalnet_handler'


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


def setup_logging(output_dir: Optional[str], rank: int = 0, name: str = '',
                  level: int = logging.INFO) -> logging.Logger:
    """Configure the root logger for this process and return the logger ``name``.

    Calling it again (tests, a second run in one process) replaces the handlers it added before.

    Args:
        output_dir: folder of ``log_rank{rank}.txt``; None = console only.
        rank: process rank; only rank 0 logs to the console.
        name: name of the returned logger (the model name in the original).
        level: level of the root logger.
    """
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_TAG, False):
            root.removeHandler(handler)
            handler.close()
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(_ColorFormatter())  # termcolor drops the colours when stdout is not a terminal
        setattr(console, _HANDLER_TAG, True)
        root.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        file_handler = logging.FileHandler(os.path.join(output_dir, f'log_rank{rank}.txt'), mode='a')
        file_handler.setFormatter(logging.Formatter(_FMT, _DATEFMT))
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
