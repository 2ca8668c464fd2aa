"""python -m datasets.check: unreadable and short videos found, summary printed, exit status, clean list."""
import os
import shutil

import pytest

from datasets import check
from video_helpers import make_config


def run_check(config, tmp_path, capsys, *extra):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text(config.dump())
    status = check.main(['--cfg', str(cfg), '--no-progress', *extra])
    return status, capsys.readouterr().out


@pytest.mark.parametrize('workers', ['1', '2'])
def test_check_reports_unreadable_and_short_videos(video_dir, tmp_path, capsys, workers):  # noqa: F811
    root, good, bad = video_dir
    rows = good + [(name, 1) for name in bad.values()]
    config = make_config(root, rows, tmp_path, **{'DATA.NUM_FRAMES': 8, 'AUG.FRAME_INTERVAL': 4,
                                                  'DATA.ROOT': str(root)})
    clean = tmp_path / 'clean.csv'
    status, out = run_check(config, tmp_path, capsys, '--workers', workers, '--write-clean', str(clean))
    assert status == 4
    assert f'videos: {len(rows)}, readable: {len(good)}, unreadable: {len(bad)}' in out
    for name in bad.values():
        assert f'UNREADABLE {root}/{name}:' in out
    assert 'header claims 45 frames' in out and 'file not found' in out and 'empty file' in out
    assert 'short (< 11 frames' in out                       # NUM_FRAMES + FRAME_INTERVAL - 1
    assert 'resolutions (1 distinct): 32x24 (7)' in out and 'frames: min 20' in out and 'fps: min 30' in out
    assert clean.read_text() == ''.join(f'{path},{label}\n' for path, label in good)


def test_check_passes_on_readable_videos_and_flags_short_ones(video_dir, tmp_path, capsys):  # noqa: F811
    root, good, _ = video_dir
    config = make_config(root, good, tmp_path, **{'DATA.NUM_FRAMES': 32, 'AUG.FRAME_INTERVAL': 1})
    status, out = run_check(config, tmp_path, capsys, '--workers', '1', '--full')
    assert status == 0
    assert 'unreadable: 0' in out and 'short (< 32 frames, indices will wrap): 3' in out
    assert f'short {root}/v0.mp4: 20 frames' in out


def test_check_bad_config_is_a_clear_error(tmp_path, capsys):
    status = check.main(['--cfg', str(tmp_path / 'none.yaml'), '--no-progress'])
    assert status == 2 and 'config file not found' in capsys.readouterr().err


def _crash_on_marked_files(path, backend, sampler, full=False):
    """Stands in for check_video in the worker processes: dies like a segfaulting decoder would."""
    import os
    if 'crash' in os.path.basename(path):
        os._exit(11)
    return ORIGINAL_CHECK_VIDEO(path, backend, sampler, full)


ORIGINAL_CHECK_VIDEO = check.check_video


def test_a_decoder_that_kills_its_process_is_reported(video_dir, monkeypatch):  # noqa: F811
    root, good, _ = video_dir
    monkeypatch.setattr(check, 'check_video', _crash_on_marked_files)
    paths = [str(root / good[0][0]), str(root / 'crash.mp4'), str(root / good[1][0])]
    results = check.scan(paths, 'pyav', check.FrameSampler(4, 1), workers=2, progress=False)
    assert [r['ok'] for r in results] == [True, False, True]
    assert results[1]['reason'] == 'the decoder crashed the process'


def prepared_folder(video_dir, tmp_path):
    """The readable videos of ``video_dir`` as a folder of class subfolders, prepared into ``tmp_path/data``."""
    from datasets.prepare.folder import main as prepare_folder
    root, good, _ = video_dir
    own = tmp_path / 'own videos'
    for name, label in good:
        (own / f'class {label}').mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, own / f'class {label}' / name)
    assert prepare_folder(['--videos', str(own), '--out', str(tmp_path / 'data')]) == 0
    return own, tmp_path / 'data'


def test_check_and_the_loader_use_the_root_of_a_prepared_list(video_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from datasets import build_dataset
    from engine.preflight import run_file_problems
    own, data = prepared_folder(video_dir, tmp_path)
    monkeypatch.chdir(tmp_path / 'data')      # the lists' paths are relative to the videos, not to here
    config = make_config(own, [], tmp_path, **{'DATA.ROOT': '', 'DATA.TRAIN_FILE': str(data / 'train.csv'),
                                               'DATA.VAL_FILE': str(data / 'val.csv'), 'DATA.TEST_FILE': '',
                                               'DATA.LABEL_LIST': str(data / 'labels.csv')})
    capsys.readouterr()
    status, out = run_check(config, tmp_path, capsys, '--workers', '1')
    assert status == 0 and 'unreadable: 0' in out, out
    assert f"under {own} (the root recorded in {data / 'manifest.json'}; DATA.ROOT is '')" in out
    # main.py: the start-up check finds the videos, the loader reads them there
    assert not [p for p in run_file_problems(config) if p], run_file_problems(config)
    dataset = build_dataset(config, 'val')
    assert all(os.path.isfile(path) and path.startswith(str(own)) for path, _ in dataset.samples)


def test_videos_not_found_under_a_relative_root_name_it(video_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from datasets import build_dataset
    root, good, _ = video_dir
    monkeypatch.chdir(tmp_path)
    config = make_config('elsewhere', good[:2], tmp_path)
    status, out = run_check(config, tmp_path, capsys, '--workers', '1')
    assert status == 4
    assert f"2 of 2 videos not found under DATA.ROOT 'elsewhere', relative to the working directory {tmp_path}: " \
           f"set --opts DATA.ROOT" in out, out
    item = build_dataset(config, 'val')[0]
    assert item['unreadable'][2] == f"file not found under DATA.ROOT 'elsewhere', relative to the working " \
                                    f"directory {tmp_path}"
