"""The exit codes that docs/tools.md and docs/exit-codes.md state are the codes the tools return.

Each statement is found in the docs by a pattern that captures the number the docs give (so a statement that
is reworded or dropped fails here too), and the case it describes is run cheaply, in-process, on a tiny model.
"""
import importlib
import os
import re
import subprocess
import sys

import pytest
import torch

from engine_helpers import REPO, env

DOCS = os.path.join(REPO, 'docs')


def _doc(name):
    with open(os.path.join(DOCS, name), encoding='utf-8') as f:
        return ' '.join(f.read().split())   # one line: statements may be wrapped anywhere


def _stated(name, pattern):
    found = re.findall(pattern, _doc(name))
    assert len(found) == 1, f"docs/{name}: expected one statement matching {pattern!r}, found {len(found)}"
    return int(found[0])


def _table_code(phrase):
    """The code in the first column of the docs/exit-codes.md table row that contains ``phrase``."""
    rows = [line for line in _doc_lines('exit-codes.md') if line.startswith('|') and phrase in line]
    assert len(rows) == 1, f"docs/exit-codes.md: expected one table row with {phrase!r}, found {len(rows)}"
    return int(rows[0].strip('|').split('|')[0])


def _doc_lines(name):
    with open(os.path.join(DOCS, name), encoding='utf-8') as f:
        return f.read().splitlines()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A 3-class toy-sized checkpoint with its config, an unreadable video and a missing one."""
    from engine.checkpoint import save_checkpoint
    from engine.config import config_to_yaml, load_config
    from models import build_model

    tmp = tmp_path_factory.mktemp('exit_codes')
    opts = ['DATA.NUM_CLASSES', '3', 'MODEL.NUM_CLASSES', '3', 'DATA.LABEL_LIST', '', 'DATA.NUM_FRAMES', '4',
            'DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'MODEL.FOCAL.EMBED_DIM', '8',
            'MODEL.FOCAL.DEPTHS', '[1, 1, 1, 1]', 'DATA.NUM_WORKERS', '0', 'TEST.FINAL_NUM_CLIP', '1',
            'TEST.FINAL_NUM_CROP', '1', 'TEST.NUM_CLIP', '1', 'TEST.NUM_CROP', '1']
    config = load_config(os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml'), opts)
    torch.manual_seed(0)
    ckpt = tmp / 'tiny.pth'
    save_checkpoint(ckpt, {'model': build_model(config).state_dict(), 'config': config_to_yaml(config),
                           'class_names': ['a', 'b', 'c']})
    broken = tmp / 'broken.mp4'
    broken.write_bytes(b'\x00\x00\x00\x18ftypmp42 truncated')
    return dict(ckpt=str(ckpt), broken=str(broken), missing=str(tmp / 'missing.mp4'), tmp=tmp)


def _run(tool, argv):
    module = importlib.import_module(f'tools.{tool}')
    try:
        return module.main(argv)
    except SystemExit as e:    # argparse
        return e.code


def test_predict_unreadable_video(tiny, capsys):
    code = _stated('tools.md', r'cannot be read is reported on one line and the others are still predicted '
                               r'\(exit code (\d+)\)')
    assert code == _table_code('any video given to `tools.predict`')
    rc = _run('predict', ['--resume', tiny['ckpt'], tiny['broken'], '--workers', '0', '--device', 'cpu'])
    assert rc == code
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith(f"error: {tiny['broken']}: cannot read the video")


def test_visualize_missing_or_unreadable_video(tiny, capsys):
    code = _stated('tools.md', r'missing or cannot be read stops it with one line naming the file \(exit code (\d+)\)')
    rc = _run('visualize', ['--resume', tiny['ckpt'], tiny['broken'], '--out', str(tiny['tmp'] / 'vis'),
                            '--device', 'cpu'])
    assert rc == code and capsys.readouterr().err.startswith(f"error: {tiny['broken']}: cannot read the video")
    # as the user runs it (a process of its own), so that log warnings would reach its stderr too
    proc = subprocess.run([sys.executable, '-m', 'tools.visualize', '--resume', tiny['ckpt'], tiny['missing'],
                           '--out', str(tiny['tmp'] / 'vis'), '--device', 'cpu'], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code
    assert proc.stderr.count('\n') == 1 and proc.stderr.startswith(f"error: {tiny['missing']}: "), proc.stderr
    assert not os.path.exists(tiny['tmp'] / 'vis')


def test_publish_again_on_the_same_input(tiny, capsys):
    code = _stated('tools.md', r'says `already published` and exits (\d+)')
    out = str(tiny['tmp'] / 'release' / 'tiny.pth')
    assert _run('publish', [tiny['ckpt'], out]) == 0
    assert _run('publish', [tiny['ckpt'], out]) == code


def test_bad_command_line_of_every_tool(capsys):
    code = _table_code('bad command line')
    intro = ' '.join(_doc_lines('exit-codes.md')[:6])
    tools = re.findall(r'`tools\.(\w+)`', intro)
    assert {'predict', 'visualize', 'publish', 'report', 'flops', 'export', 'extract_features'} <= set(tools)
    for tool in tools:
        assert _run(tool, ['--no-such-flag']) == code, tool
