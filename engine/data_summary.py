"""What a run logs about its data before it starts: which lists, and whether the loader can keep up.

Two people comparing numbers need to know they used the same videos: every annotation list the run reads is
logged with its number of videos and sha256, and compared with the ``manifest.json`` that
``python -m datasets.prepare`` wrote beside it (a list edited since then is a warning). The second line
compares ``DATA.NUM_WORKERS`` with the cores this node has per process, because a train loader with too few
workers starves the GPU (the trainer logs the fraction of step time spent waiting for data every epoch).
"""
from __future__ import annotations

import logging
from typing import Any, List, Tuple

from datasets import AnnotationError
from datasets.loader import describe_num_workers
from datasets.prepare import check_list
from utils.env import local_process_count, usable_cpus

logger = logging.getLogger(__name__)


def lists_read(config: Any) -> List[Tuple[str, str]]:
    """``(key, path)`` of the annotation lists this run reads: VAL_FILE for ``--eval``; TRAIN_FILE, VAL_FILE and
    (when the final test is on and TEST_FILE is set) TEST_FILE for training."""
    if config.EVAL_MODE:
        return [('DATA.VAL_FILE', config.DATA.VAL_FILE)]
    read = [('DATA.TRAIN_FILE', config.DATA.TRAIN_FILE), ('DATA.VAL_FILE', config.DATA.VAL_FILE)]
    if config.TRAIN.FINAL_TEST and config.DATA.TEST_FILE:
        read.append(('DATA.TEST_FILE', config.DATA.TEST_FILE))
    return read


def log_data_summary(config: Any) -> None:
    """Log each list read (videos, sha256, manifest check) and the DATA.NUM_WORKERS recommendation."""
    for key, path in lists_read(config):
        try:
            check = check_list(path, label_list=config.DATA.LABEL_LIST or None)
        except AnnotationError as e:  # the loaders raise the same error with its context when they open it
            logger.warning(f'{key}: {e}')
            continue
        if check.status in ('differs', 'bad manifest') or check.labels_match is False:
            logger.warning(f'{key} {check.message}')
        else:
            logger.info(f'{key} {check.message}')
    line, is_warning = describe_num_workers(config, usable_cpus(), local_process_count())
    (logger.warning if is_warning else logger.info)(line)
