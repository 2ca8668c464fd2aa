"""A finished run given again: the same command after training and the final test are done.

``main.py`` asks :func:`finished_run` before it builds anything. When the run folder holds the final test's
complete results for this config (``eval_results.json`` and ``predictions.csv`` of the final-test views on the
final-test list, written after the last checkpoint, by a run of ``TRAIN.EPOCHS`` epochs), the run is finished:
one line says so and nothing is loaded, rebuilt or rewritten (no log, no ``config.yaml`` or
``environment.json``). When training is done but those results are missing or incomplete (the final test was
interrupted), the trainer resumes at ``TRAIN.EPOCHS`` and ``main.py`` runs only the final test.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from engine.checkpoint.saving import METRICS_FILE
from utils.jsonl import read_jsonl

RESULTS_FILE = 'eval_results.json'
PREDICTIONS_FILE = 'predictions.csv'


def final_test_file(config: Any) -> str:
    """The list the final test reads: DATA.TEST_FILE, or DATA.VAL_FILE when it is ''."""
    return config.DATA.TEST_FILE or config.DATA.VAL_FILE


def _read_results(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding='utf-8') as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def _last_metrics_epoch(output: str) -> Optional[int]:
    try:
        records = read_jsonl(os.path.join(output, METRICS_FILE))
    except (OSError, ValueError):
        return None
    epochs = [r.get('epoch') for r in records if isinstance(r.get('epoch'), int)]
    return max(epochs) if epochs else None


def finished_run(config: Any) -> Optional[str]:
    """The line to print when the run in ``config.OUTPUT`` has finished training and its final test with this
    config's settings, else None (train or test as usual). Reads two small files and a few file times."""
    if config.EVAL_MODE or config.THROUGHPUT_MODE or not config.TRAIN.FINAL_TEST or config.MODEL.RESUME:
        return None  # an explicit --resume asks to train from that checkpoint: as before
    output = config.OUTPUT
    results_path, last = os.path.join(output, RESULTS_FILE), os.path.join(output, 'last.pth')
    results = _read_results(results_path)
    if results is None or not os.path.isfile(os.path.join(output, PREDICTIONS_FILE)) or not os.path.isfile(last):
        return None
    acc1 = results.get('acc1')
    views = f'{config.TEST.FINAL_NUM_CLIP}x{config.TEST.FINAL_NUM_CROP}'
    tested = results.get('val_file')
    if not isinstance(acc1, (int, float)) or results.get('views') != views or not isinstance(tested, str) \
            or os.path.abspath(tested) != os.path.abspath(final_test_file(config)):
        return None
    # results of an earlier, shorter run (TRAIN.EPOCHS raised since) are older than the checkpoints after them
    if os.path.getmtime(results_path) < os.path.getmtime(last):
        return None
    epochs = results.get('train_epochs')
    if epochs is None:  # results written without the run's length: the metrics tell whether training ended
        finished = _last_metrics_epoch(output) == config.TRAIN.EPOCHS - 1
    else:
        finished = epochs == config.TRAIN.EPOCHS
    if not finished:
        return None
    return (f'already finished: epoch {config.TRAIN.EPOCHS}/{config.TRAIN.EPOCHS}, test top-1 {acc1:.2f}% '
            f'({results_path}); nothing was changed. Use another --tag (or --output) for a new run, or --eval '
            '--resume CHECKPOINT to evaluate it again')
