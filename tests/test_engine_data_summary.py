"""The start-of-run data summary: lists read with their manifest check, and the loader-worker advice."""
import json
import logging
import os

from datasets.loader import describe_num_workers, recommended_num_workers
from datasets.prepare import describe_list
from engine.config import load_config
from engine.data_summary import lists_read, log_data_summary


def _config(tmp_path, eval_mode=False, **opts):
    base = {'DATA.TRAIN_FILE': str(tmp_path / 'train.csv'), 'DATA.VAL_FILE': str(tmp_path / 'val.csv'),
            'DATA.LABEL_LIST': '', 'DATA.NUM_WORKERS': 3}
    base.update(opts)
    flat = [str(item) for pair in base.items() for item in pair]
    return load_config(None, flat, eval=eval_mode, output=str(tmp_path / 'out'))


def test_recommended_workers_leave_one_core_per_process():
    assert recommended_num_workers(16, 1) == 15
    assert recommended_num_workers(16, 8) == 1
    assert recommended_num_workers(96, 8) == 11
    assert recommended_num_workers(2, 4) == 1   # never 0: the main process would decode between steps


def test_worker_advice_warns_only_when_oversubscribed(tmp_path):
    config = _config(tmp_path)
    line, warn = describe_num_workers(config, 16, 2)
    assert 'DATA.NUM_WORKERS 3 per process' in line and 'recommended 7' in line and not warn
    line, warn = describe_num_workers(config, 4, 2)
    assert warn and 'oversubscribes' in line


def test_lists_read_per_mode(tmp_path):
    train = _config(tmp_path, **{'DATA.TEST_FILE': str(tmp_path / 'test.csv')})
    assert [k for k, _ in lists_read(train)] == ['DATA.TRAIN_FILE', 'DATA.VAL_FILE', 'DATA.TEST_FILE']
    assert [k for k, _ in lists_read(_config(tmp_path))] == ['DATA.TRAIN_FILE', 'DATA.VAL_FILE']
    evaluation = _config(tmp_path, eval_mode=True, **{'DATA.TEST_FILE': str(tmp_path / 'test.csv')})
    assert lists_read(evaluation) == [('DATA.VAL_FILE', str(tmp_path / 'val.csv'))]


def test_summary_logs_sha256_and_warns_on_an_edited_list(tmp_path, caplog):
    (tmp_path / 'train.csv').write_text('a.mp4,0\nb.mp4,1\n')
    (tmp_path / 'val.csv').write_text('c.mp4,0\n')
    videos, digest = describe_list(str(tmp_path / 'val.csv'))
    manifest = {'dataset': 'x', 'splits': {'train': {'file': 'train.csv', 'videos': 2, 'sha256': '0' * 64},
                                           'val': {'file': 'val.csv', 'videos': videos, 'sha256': digest}}}
    (tmp_path / 'manifest.json').write_text(json.dumps(manifest))
    with caplog.at_level(logging.INFO, logger='engine.data_summary'):
        log_data_summary(_config(tmp_path))
    by_level = {(r.levelno, r.getMessage().split(' ')[0]) for r in caplog.records}
    assert (logging.WARNING, 'DATA.TRAIN_FILE') in by_level   # edited after prepare: differs
    assert (logging.INFO, 'DATA.VAL_FILE') in by_level
    val_line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith('DATA.VAL_FILE'))
    assert digest in val_line and "split 'val'" in val_line
    assert any('DATA.NUM_WORKERS 3' in r.getMessage() for r in caplog.records)


def test_summary_of_a_missing_list_is_a_warning_not_an_error(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger='engine.data_summary'):
        log_data_summary(_config(tmp_path, eval_mode=True))
    assert any(r.levelno == logging.WARNING and 'DATA.VAL_FILE' in r.getMessage() and
               os.path.join(str(tmp_path), 'val.csv') in r.getMessage() for r in caplog.records)
