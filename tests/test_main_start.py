"""main.py's start: files checked before a model is built (one line each, exit 2), nothing written into a run folder
before the run starts, --eval in a folder of its own, and logging that survives in-process runs."""
import hashlib
import io
import logging
import os
import subprocess
import sys

import pytest
import torch

import main
from engine.config import load_config
from engine.preflight import FOCALNET_REPO, ORIGINAL_REPO, check_run_files, run_file_problems
from engine_helpers import REPO, TOY_CFG, env, make_tiny_data, run_folder, tiny_opts
from utils.logger import FILE_ONLY, close_logging, file_only, setup_logging, start_log_file


def _hashes(folder):
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _main_subprocess(args, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, 'main.py')] + args, cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300)


def _one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('main.py: error: '), proc.stderr
    assert proc.stdout == ''  # nothing logged: no config dump, no model built
    return lines[0]


# ------------------------------------------------------------------ the authors' command lines, paths that do not exist
@pytest.mark.slow
def test_the_authors_training_command_fails_in_one_line_before_any_model(tmp_path):
    """README of the original: torchrun ... main.py --cfg configs/kinetics400/video_focalnet_base.yaml --output output/
    (underscore name), with a data location that does not exist."""
    line = _one_line_error(_main_subprocess(
        ['--cfg', 'configs/kinetics400/video_focalnet_base.yaml', '--output', 'output/', '--opts',
         'DATA.ROOT', '/nonexistent/k400', 'DATA.TRAIN_FILE', '/nonexistent/k400/train.csv',
         'DATA.VAL_FILE', '/nonexistent/k400/val.csv'], cwd=str(tmp_path)))
    assert 'DATA.TRAIN_FILE /nonexistent/k400/train.csv (the training list): not found' in line
    assert 'also missing or unusable: DATA.VAL_FILE' in line and 'TRAIN.PRETRAINED_PATH' in line
    assert not os.path.exists(tmp_path / 'output')  # no run folder, no log


@pytest.mark.slow
def test_the_authors_eval_command_fails_in_one_line_pointing_to_the_weights(tmp_path):
    line = _one_line_error(_main_subprocess(
        ['--cfg', 'configs/kinetics400/video_focalnet_base.yaml', '--eval', '--resume', 'video-focalnet_base_k400.pth',
         '--opts', 'TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3'], cwd=str(tmp_path)))
    assert '--resume video-focalnet_base_k400.pth (the checkpoint to evaluate): not found at ' \
           f'{tmp_path / "video-focalnet_base_k400.pth"} (relative to the working directory {tmp_path})' in line
    assert f'model zoo in the README of {ORIGINAL_REPO}' in line
    assert not os.path.exists(tmp_path / 'output')


@pytest.mark.slow
def test_a_missing_imagenet_file_says_where_to_get_it_and_how_to_skip_it(tmp_path):
    data = make_tiny_data(str(tmp_path / 'data'), num_train=2, num_val=1)
    line = _one_line_error(_main_subprocess(
        ['--cfg', os.path.join(REPO, 'configs', 'kinetics400', 'video-focalnet_tiny.yaml'), '--opts',
         *tiny_opts(data, MODEL__NUM_CLASSES=8, DATA__NUM_CLASSES=8)], cwd=str(tmp_path)))
    assert line.startswith('main.py: error: TRAIN.PRETRAINED_PATH ./pretrained/focalnet_tiny_srf.pth (the ImageNet-1k '
                           'FocalNet-SRF weights training starts from): not found at ')
    assert FOCALNET_REPO in line and "--pretrained ''" in line and 'focalnet_tiny_srf.pth' in line


# ------------------------------------------------------------------------------------- the checks themselves
@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_tiny_data(str(tmp_path_factory.mktemp('start') / 'data'), num_train=8, num_val=2)


def test_each_file_problem_is_one_line_saying_what_the_file_is_for(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(TOY_CFG, tiny_opts(data, DATA__TRAIN_FILE='train.csv', DATA__LABEL_LIST='names.csv',
                                            TRAIN__PRETRAINED_PATH='focalnet_small_srf.pth'))
    problems = run_file_problems(config)
    assert [p.split(' ', 1)[0] for p in problems] == ['DATA.TRAIN_FILE', 'DATA.LABEL_LIST', 'TRAIN.PRETRAINED_PATH']
    assert all('\n' not in p for p in problems)
    train, labels, pretrained = problems
    assert f'not found at {tmp_path / "train.csv"} (relative to the working directory {tmp_path})' in train
    assert f'did you mean {os.path.join(data, "train.csv")} (inside DATA.ROOT)?' in train
    assert "the class names" in labels and "DATA.LABEL_LIST ''" in labels
    assert 'download focalnet_small_srf.pth' in pretrained and FOCALNET_REPO in pretrained
    with pytest.raises(main.ConfigError) as e:
        check_run_files(config)
    assert str(e.value).startswith(train) and 'also missing or unusable: DATA.LABEL_LIST names.csv, ' \
                                              'TRAIN.PRETRAINED_PATH focalnet_small_srf.pth' in str(e.value)


def test_lists_whose_videos_are_all_elsewhere_name_data_root(data, tmp_path):
    problems = run_file_problems(load_config(TOY_CFG, tiny_opts(data, DATA__ROOT=str(tmp_path / 'nowhere'))))
    assert len(problems) == 1 and problems[0].startswith(f'DATA.ROOT {tmp_path / "nowhere"} (the folder the videos')
    problems = run_file_problems(load_config(TOY_CFG, tiny_opts(data, DATA__ROOT=str(tmp_path))))
    assert len(problems) == 1 and 'none of its first 8 videos exists' in problems[0]
    assert run_file_problems(load_config(TOY_CFG, tiny_opts(data))) == []


def test_checkpoints_are_checked_before_the_model(data, tmp_path):
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    assert '--eval needs the checkpoint' in run_file_problems(load_config(TOY_CFG, tiny_opts(data), eval=True))[0]
    problem, = run_file_problems(load_config(TOY_CFG, tiny_opts(data), eval=True, resume=str(broken)))
    assert problem.startswith(f'--resume {broken} (the checkpoint to evaluate): cannot be used: ')
    problem, = run_file_problems(load_config(TOY_CFG, tiny_opts(data), resume=str(tmp_path)))
    assert 'is a folder' in problem and 'resume training from' in problem
    problem, = run_file_problems(load_config(TOY_CFG, tiny_opts(data), resume='video-focalnet_tiny_k400.pth'))
    assert ORIGINAL_REPO in problem
    # resuming (explicitly or from the run folder's own last.pth) does not read the ImageNet file
    missing_imagenet = tiny_opts(data, TRAIN__PRETRAINED_PATH=str(tmp_path / 'focalnet_tiny_srf.pth'))
    assert len(run_file_problems(load_config(TOY_CFG, missing_imagenet))) == 1
    ckpt = tmp_path / 'ok.pth'
    torch.save({'model': {}}, ckpt)
    assert run_file_problems(load_config(TOY_CFG, missing_imagenet, resume=str(ckpt))) == []


def test_files_to_be_generated_are_not_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the toy config's data/toy does not exist here: main.py generates it
    config = load_config(TOY_CFG)
    assert len(run_file_problems(config)) == 4
    assert run_file_problems(config, generated=main.files_to_generate(config)) == []
    assert run_file_problems(load_config(TOY_CFG, throughput=True)) == []  # --throughput reads no file


def test_only_the_first_process_prints_the_error(monkeypatch, capsys):
    """Under torchrun every process finds the same problem; one line on the terminal, not one per GPU."""
    monkeypatch.setenv('RANK', '1')
    assert main.main(['--cfg', 'configs/no/such.yaml']) == 2
    assert capsys.readouterr().err == ''
    monkeypatch.setenv('RANK', '0')
    assert main.main(['--cfg', 'configs/no/such.yaml']) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ nothing lost, nothing overwritten
@pytest.fixture(scope='module')
def finished_run(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('run') / 'out')
    assert main.main(['--cfg', TOY_CFG, '--output', out, '--tag', 't',
                      '--opts', *tiny_opts(data, TRAIN__EPOCHS=1, TRAIN__FINAL_TEST=True)]) == 0
    folder = run_folder(out, 't')
    for name in ('config.yaml', 'environment.json', 'log_rank0.txt', 'eval_results.json', 'predictions.csv',
                 'last.pth'):
        assert os.path.isfile(os.path.join(folder, name)), name
    return out, folder


def test_a_failed_restart_leaves_the_run_folder_unchanged(data, finished_run, tmp_path, capsys):
    """A broken --resume: before, config.yaml and environment.json were rewritten (naming the broken file)."""
    out, folder = finished_run
    before = _hashes(folder)
    broken = tmp_path / 'broken.pth'
    broken.write_bytes(b'\x00' * 64)
    for extra in (['--resume', str(broken)], ['--pretrained', str(tmp_path / 'focalnet_tiny_srf.pth'),
                                               '--opts', 'TRAIN.AUTO_RESUME', 'False']):
        code = main.main(['--cfg', TOY_CFG, '--output', out, '--tag', 't', '--opts',
                          *tiny_opts(data, TRAIN__EPOCHS=2, TRAIN__FINAL_TEST=True)] + extra)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert _hashes(folder) == before
    # a fresh run that fails later (after the model is built) leaves no folder either
    code = main.main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'fresh'), '--opts',
                      *tiny_opts(data, DATA__BATCH_SIZE=16)])
    assert code == 2 and 'fewer than one optimizer update' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'fresh')


@pytest.mark.parametrize('own_output', [False, True], ids=['resume-only', 'run-output'])
def test_eval_never_overwrites_the_training_run(data, finished_run, own_output):
    out, folder = finished_run
    before = _hashes(folder)
    before = {k: v for k, v in before.items() if not k.startswith('eval' + os.sep)}
    args = ['--cfg', TOY_CFG, '--eval', '--resume', os.path.join(folder, 'last.pth')]
    if own_output:
        args += ['--output', out, '--tag', 't']
    assert main.main(args + ['--opts', *tiny_opts(data, TEST__NUM_CLIP=2)]) == 0
    after = _hashes(folder)
    assert {k: after[k] for k in before} == before
    evaluated = os.path.join(folder, 'eval', 'last_2x1')
    assert sorted(os.listdir(evaluated)) == ['config.yaml', 'environment.json', 'eval_results.json', 'log_rank0.txt',
                                             'predictions.csv']
    assert load_config(os.path.join(evaluated, 'config.yaml')).EVAL_MODE


# ------------------------------------------------------------------------------------- a run folder, one config
def test_continuing_a_run_with_a_changed_setting_is_refused_and_writes_nothing(data, finished_run, capsys):
    """The same run folder with another weight decay and smoothing used to auto-resume, train nothing, report
    the old result and rewrite config.yaml as if best.pth had been trained with the new values."""
    out, folder = finished_run
    before = _hashes(folder)
    changed = tiny_opts(data, TRAIN__EPOCHS=1, TRAIN__FINAL_TEST=True, TRAIN__WEIGHT_DECAY=0.1, AUG__LABEL_SMOOTH=0.0)
    for extra in ([], ['--resume', os.path.join(folder, 'last.pth')]):  # auto-resume, and --resume into the folder
        code = main.main(['--cfg', TOY_CFG, '--output', out, '--tag', 't', '--opts', *changed] + extra)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert 'TRAIN.WEIGHT_DECAY 0.05 -> 0.1' in err and 'AUG.LABEL_SMOOTH 0.1 -> 0' in err and '--tag NAME' in err
        assert 'DATA.NUM_WORKERS' in err  # the keys that may change are named
    assert _hashes(folder) == before


def test_keys_that_may_change_on_resume_are_allowed_and_returned_for_the_log(data, finished_run):
    from engine.run_identity import check_same_run
    out, folder = finished_run
    config = load_config(TOY_CFG, tiny_opts(data, TRAIN__EPOCHS=3, TRAIN__FINAL_TEST=True, PRINT_FREQ=5),
                         output=out, tag='t')
    assert check_same_run(config, world_size=1, resumes_from_folder=True) == ['TRAIN.EPOCHS 1 -> 3',
                                                                              'PRINT_FREQ 1 -> 5']
    # the run's own config.yaml given back as --cfg continues the run (its LRs are already scaled)
    assert check_same_run(load_config(os.path.join(folder, 'config.yaml')), 1, True) == []
    # a start that does not continue the run (--eval) is not compared
    evaluation = load_config(TOY_CFG, tiny_opts(data, TRAIN__WEIGHT_DECAY=0.1), output=out, tag='t', eval=True,
                             resume=os.path.join(folder, 'best.pth'))
    assert check_same_run(evaluation, 1, True) == []


def test_the_runs_config_yaml_evaluates_its_best_checkpoint(finished_run, capsys):
    """config.yaml given back as --cfg, end to end: before, a config with a BASE: was not loadable and every
    config.yaml put its run folder under itself again (OUTPUT held the whole path)."""
    out, folder = finished_run
    before = {k: v for k, v in _hashes(folder).items() if not k.startswith('eval' + os.sep)}
    assert main.main(['--cfg', os.path.join(folder, 'config.yaml'), '--eval', '--resume',
                      os.path.join(folder, 'best.pth')]) == 0
    assert os.path.isfile(os.path.join(folder, 'eval', 'best_1x1', 'eval_results.json'))
    after = _hashes(folder)
    assert {k: after[k] for k in before} == before


# --------------------------------------------------------------------------------------------------- logging
def test_console_summary_and_file_details(tmp_path, capsys):
    log = logging.getLogger('start_test')
    setup_logging(str(tmp_path / 'run'), defer_file=True)
    log.info('summary line')
    log.info('the full config', extra=FILE_ONLY)
    with file_only():
        log.info('a checksum')
        log.warning('a warning still shows')
    assert not os.path.exists(tmp_path / 'run')  # deferred: nothing written before the run starts
    start_log_file()
    log.info('after the start')
    close_logging()
    console = capsys.readouterr().out
    assert 'summary line' in console and 'a warning still shows' in console
    assert 'the full config' not in console and 'a checksum' not in console
    written = (tmp_path / 'run' / 'log_rank0.txt').read_text()
    for message in ('summary line', 'the full config', 'a checksum', 'a warning still shows', 'after the start'):
        assert message in written


def test_logging_never_writes_to_a_closed_console(monkeypatch, capsys):
    """A run in the same process used to keep its console handler on the stream it was given (a test's
    captured stdout); logging after that stream was closed printed 'Logging error' tracebacks."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', stream)
    setup_logging(None)
    monkeypatch.undo()
    stream.close()
    logging.getLogger('start_test').info('logged after the first stream closed')
    captured = capsys.readouterr()
    assert 'Logging error' not in captured.err and 'logged after the first stream closed' in captured.out
    close_logging()
