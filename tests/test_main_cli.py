"""main.py's command line (in-process): the original's flags, launcher flags, unknown flags, flags applied
only when given, user errors as one line, toy-data preparation and --throughput."""
import os
import signal
import subprocess
import sys

import pytest
import torch

import main
from engine_helpers import REPO, TOY_CFG, env, make_tiny_data, tiny_opts
from engine.config import get_config, load_config


def test_unknown_flags_are_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        main.parse_args(['--cfg', TOY_CFG, '--data-pth', 'x'])
    assert e.value.code == 2 and 'unrecognized arguments: --data-pth' in capsys.readouterr().err


@pytest.mark.parametrize('args,expected', [
    (['--batchsize', '3'], 'did you mean --batch-size (not --batchsize)?'),
    (['--resmue', 'x.pth'], 'did you mean --resume (not --resmue)?'),
    (['--seed', 'abc'], "argument --seed: invalid int value: 'abc'; main.py --help lists the flags"),
    (['--no-such-flag'], 'main.py --help lists the flags'),
])
def test_command_line_errors_are_one_line_with_the_closest_flag(args, expected, capsys):
    """argparse printed its 7-line usage before the error."""
    with pytest.raises(SystemExit) as e:
        main.parse_args(['--cfg', TOY_CFG] + args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and err.startswith('main.py: error: ') and expected in err, err


@pytest.mark.parametrize('flag', ['--local_rank', '--local-rank'])
def test_deprecated_launcher_flag_in_both_spellings(flag):
    assert main.parse_args(['--cfg', TOY_CFG, flag, '3']).local_rank == 3


def test_flags_apply_only_when_given():
    plain = get_config(main.parse_args(['--cfg', TOY_CFG]))
    assert plain.DATA.BATCH_SIZE == load_config(TOY_CFG).DATA.BATCH_SIZE
    assert plain.TRAIN.AMP == 'none' and not plain.TRAIN.USE_CHECKPOINT and not plain.EVAL_MODE
    args = main.parse_args(['--cfg', TOY_CFG, '--batch-size', '3', '--accumulation-steps', '2', '--use-checkpoint',
                            '--amp-opt-level', 'O1', '--seed', '7', '--output', '/tmp/o', '--tag', 't',
                            '--resume', 'r.pth', '--pretrained', 'p.pth', '--eval',
                            '--opts', 'TRAIN.EPOCHS', '3', '--opts', 'TEST.NUM_CLIP', '4'])
    c = get_config(args)
    assert (c.DATA.BATCH_SIZE, c.TRAIN.ACCUMULATION_STEPS, c.TRAIN.USE_CHECKPOINT, c.TRAIN.AMP, c.SEED) == \
        (3, 2, True, 'fp16', 7)
    assert c.OUTPUT == '/tmp/o/toy/video-focalnet_toy/t/eval/r_4x3' and c.MODEL.RESUME == 'r.pth'  # --eval's own
    assert c.TRAIN.PRETRAINED_PATH == 'p.pth' and c.EVAL_MODE
    assert c.TRAIN.EPOCHS == 3 and c.TEST.NUM_CLIP == 4  # repeated --opts accumulate
    assert get_config(main.parse_args(['--cfg', TOY_CFG, '--amp-opt-level', 'O0'])).TRAIN.AMP == 'none'


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main.main(['--cfg', TOY_CFG, '--opts', 'TRAIN.NO_SUCH_KEY', '1']) == 2
    assert 'TRAIN.NO_SUCH_KEY' in capsys.readouterr().err
    data = make_tiny_data(str(tmp_path / 'data'), num_train=2, num_val=1)
    code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--eval', '--opts', *tiny_opts(data)])
    assert code == 2 and '--eval needs the checkpoint' in capsys.readouterr().err
    code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--eval', '--resume',
                      str(tmp_path / 'missing.pth'), '--opts', *tiny_opts(data)])
    assert code == 2 and 'missing.pth' in capsys.readouterr().err
    # 2 training videos, 4 per batch: not one optimizer update per epoch
    code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--opts', *tiny_opts(data)])
    assert code == 2 and 'fewer than one optimizer update' in capsys.readouterr().err
    # ImageNet weights of another width: the mismatch report, not a traceback
    from models import VideoFocalNet
    wide = str(tmp_path / 'wide.pth')
    torch.save({'model': VideoFocalNet(embed_dim=16, depths=[1, 1, 1, 1], num_classes=1000).state_dict()}, wide)
    code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--pretrained', wide,
                      '--opts', *tiny_opts(data, DATA__BATCH_SIZE=2)])
    err = capsys.readouterr().err
    assert code == 2 and 'wide.pth' in err and 'Traceback' not in err, err


def test_toy_data_is_generated_by_rank_0_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's data/toy/*.csv are relative: none of them exist here
    calls = []
    monkeypatch.setattr(main, 'ensure_toy_dataset', lambda root: calls.append(root))
    config = load_config(TOY_CFG)
    main.prepare_toy_data(config, main.du.DistInfo())
    assert calls == ['data/toy']
    os.makedirs(tmp_path / 'data' / 'toy')
    (tmp_path / 'data' / 'toy' / 'train.csv').write_text('')
    main.prepare_toy_data(config, main.du.DistInfo())  # a folder from before test.csv: ensure_toy_dataset says so
    assert len(calls) == 2
    for name in ('val.csv', 'test.csv', 'labels.csv'):
        (tmp_path / 'data' / 'toy' / name).write_text('')
    main.prepare_toy_data(config, main.du.DistInfo())
    main.prepare_toy_data(load_config(TOY_CFG, ['DATA.DATASET', 'kinetics400']), main.du.DistInfo())
    assert len(calls) == 2


def test_an_old_toy_folder_is_a_one_line_error(tmp_path):
    """data/toy from before the test split (no test.csv): exit 2 naming the folder, nothing overwritten.

    A subprocess: main() sets up logging on the console it is given, and a captured one closes after the test."""
    toy = tmp_path / 'data' / 'toy'
    toy.mkdir(parents=True)
    for name in ('train.csv', 'val.csv', 'labels.csv'):
        (toy / name).write_text('old\n')
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'main.py'), '--cfg', TOY_CFG, '--output',
                           str(tmp_path / 'out')], cwd=str(tmp_path),
                          env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and 'lacks test.csv' in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    assert (toy / 'train.csv').read_text() == 'old\n'


def test_throughput_mode(tmp_path, caplog):
    import logging
    data = make_tiny_data(str(tmp_path / 'data'), num_train=2, num_val=1)
    with caplog.at_level(logging.INFO):
        assert main.main(['--cfg', TOY_CFG, '--throughput', '--output', str(tmp_path / 'out'),
                          '--opts', *tiny_opts(data)]) == 0
    assert any('throughput:' in r.getMessage() and 'clips/s' in r.getMessage() for r in caplog.records)
    assert not os.path.exists(tmp_path / 'out')  # writes nothing, so it replaces no file of a run


def test_signal_during_validation_stops_after_the_epoch_save(tmp_path, monkeypatch):
    """SIGTERM while validating: the epoch's last.pth is written, then the run exits 0 instead of doing one
    more update of the next epoch (or, in the last epoch, ignoring the signal)."""
    data = make_tiny_data(str(tmp_path / 'data'), num_train=8, num_val=2)
    validate = main.Trainer.validate

    def validate_then_signal(self, epoch):
        result = validate(self, epoch)
        os.kill(os.getpid(), signal.SIGTERM)   # caught by the trainer's handler: only a flag
        return result

    monkeypatch.setattr(main.Trainer, 'validate', validate_then_signal)
    out = tmp_path / 'out'
    assert main.main(['--cfg', TOY_CFG, '--output', str(out), '--tag', 't',
                      '--opts', *tiny_opts(data, TRAIN__EPOCHS=3)]) == 0
    folder = out / 'toy' / 'video-focalnet_toy' / 't'
    last = torch.load(folder / 'last.pth', weights_only=True)
    assert (last['epoch'], last['epoch_step']) == (0, 0)
    assert len((folder / 'metrics.jsonl').read_text().splitlines()) == 1
    assert not (folder / 'eval_results.json').exists()


def test_toy_data_is_generated_only_for_missing_toy_files(tmp_path):
    """Only the files the mode reads, only when missing: --eval with an existing VAL_FILE generates nothing
    (issue 12)."""
    root = str(tmp_path / 'toy')
    own = ['DATA.ROOT', root, 'DATA.TRAIN_FILE', os.path.join(root, 'train.csv'),
           'DATA.VAL_FILE', os.path.join(root, 'val.csv'), 'DATA.TEST_FILE', os.path.join(root, 'test.csv')]
    assert main.missing_toy_files(load_config(TOY_CFG, own)) == [os.path.join(root, name)
                                                                  for name in ('train.csv', 'val.csv', 'test.csv')]
    assert main.missing_toy_files(load_config(TOY_CFG, own + ['TRAIN.FINAL_TEST', 'False'])) == [
        os.path.join(root, 'train.csv'), os.path.join(root, 'val.csv')]
    assert main.missing_toy_files(load_config(TOY_CFG, own, eval=True)) == [os.path.join(root, 'val.csv')]
    other = tmp_path / 'videos'
    other.mkdir()
    (other / 'val.csv').write_text('a.mp4,0\n')
    elsewhere = ['DATA.ROOT', str(other), 'DATA.TRAIN_FILE', str(other / 'val.csv'),
                 'DATA.VAL_FILE', str(other / 'val.csv')]
    assert main.missing_toy_files(load_config(TOY_CFG, elsewhere, eval=True)) == []  # VAL_FILE exists
    assert main.missing_toy_files(load_config(TOY_CFG, elsewhere)) == []  # TEST_FILE data/toy/test.csv: not in ROOT
    missing_elsewhere = own[:2] + own[-2:] + ['DATA.TRAIN_FILE', str(other / 'train.csv'),
                                              'DATA.VAL_FILE', str(other / 'val.csv')]
    assert main.missing_toy_files(load_config(TOY_CFG, missing_elsewhere)) == [os.path.join(root, 'test.csv')]
    assert main.missing_toy_files(load_config(TOY_CFG, own + ['DATA.DATASET', 'kinetics400'])) == []
