"""The exit codes of docs/exit-codes.md, from main.py and every tool run as a subprocess: the code, one line on
stderr, never a traceback (a native abort would show as 134)."""
import os
import re
import subprocess
import sys

import pytest
import torch

from engine_helpers import REPO, TOY_CFG, env

DOC = os.path.join(REPO, 'docs', 'exit-codes.md')


def test_the_table_is_what_main_and_the_tools_use():
    import main
    from tools import _common
    table = {int(m.group(1)) for m in re.finditer(r'^\|\s*(\d+)\s*\|', open(DOC).read(), re.M)}
    assert table == {0, 1, 2, 3, 4, 130}
    assert (main.EXIT_USER_ERROR, main.EXIT_NON_FINITE_LOSS, main.EXIT_TOO_MANY_UNREADABLE) == \
        (_common.EXIT_USER_ERROR, _common.EXIT_NON_FINITE_LOSS, _common.EXIT_UNREADABLE) == (2, 3, 4)
    assert _common.EXIT_INTERRUPTED == 130 and _common.EXIT_OK == 0


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A tiny checkpoint, a readable and an unreadable video, VAL_FILE listing both, a corrupt checkpoint, a file."""
    from datasets import write_video
    from engine.checkpoint import save_checkpoint
    from engine.config import config_to_yaml, load_config
    from models import build_model
    from video_helpers import stamped_frames
    tmp = tmp_path_factory.mktemp('exit_codes')
    write_video(str(tmp / 'good.mp4'), stamped_frames(12, 32, 32), fps=10)
    (tmp / 'broken.mp4').write_bytes(b'not a video ' * 40)
    (tmp / 'val.csv').write_text(f"{tmp / 'good.mp4'},0\n{tmp / 'broken.mp4'},1\n")
    opts = ['DATA.DATASET', 'exitcodes', 'DATA.ROOT', '', 'DATA.VAL_FILE', str(tmp / 'val.csv'), 'DATA.LABEL_LIST', '',
            'DATA.NUM_FRAMES', '4', 'DATA.IMG_SIZE', '32', 'DATA.INPUT_SIZE', '32', 'DATA.NUM_WORKERS', '1',
            'MODEL.FOCAL.EMBED_DIM', '8', 'MODEL.FOCAL.DEPTHS', '[1,1,1,1]', 'MODEL.TUBELET_SIZE', '1',
            'TEST.NUM_CLIP', '1', 'TEST.NUM_CROP', '1', 'TEST.FINAL_NUM_CLIP', '1', 'TEST.FINAL_NUM_CROP', '1',
            'TEST.ON_UNREADABLE', 'error', 'TENSORBOARD', 'False']
    config = load_config(TOY_CFG, opts)
    torch.manual_seed(0)
    save_checkpoint(tmp / 'ckpt.pth', {'model': build_model(config).state_dict(), 'config': config_to_yaml(config),
                                       'epoch': 0})
    (tmp / 'corrupt.pth').write_bytes(b'PK\x03\x04 a damaged download')
    (tmp / 'a_file').write_text('not a folder')
    ann = tmp / 'k400'
    ann.mkdir()
    for split, youtube_id in (('train', 'aaaaaaaaaaa'), ('validate', 'bbbbbbbbbbb')):
        (ann / f'{split}.csv').write_text(f'label,youtube_id,time_start,time_end,split\n'
                                          f'abseiling,{youtube_id},0,10,{split.replace("validate", "val")}\n')
        video = tmp / 'videos' / f'{youtube_id}_000000_000010.mp4'
        video.parent.mkdir(exist_ok=True)
        video.write_bytes(b'\0')
    return dict(tmp=tmp, opts=opts)


def _run(args, timeout=240):
    proc = subprocess.run([sys.executable] + args, cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stderr


def _cases(files):
    tmp, opts = files['tmp'], files['opts']
    ckpt, corrupt, good, broken = (str(tmp / n) for n in ('ckpt.pth', 'corrupt.pth', 'good.mp4', 'broken.mp4'))
    return {
        'main bad value': (['main.py', '--cfg', TOY_CFG, '--opts', 'PRINT_FREQ', '0'], 2, 'PRINT_FREQ'),
        'main corrupt checkpoint': (['main.py', '--cfg', TOY_CFG, '--eval', '--resume', corrupt, '--output',
                                     str(tmp / 'out'), '--opts', *opts], 2, 'corrupt.pth'),
        'main unreadable, TEST.ON_UNREADABLE error': (['main.py', '--cfg', TOY_CFG, '--eval', '--resume', ckpt,
                                                       '--output', str(tmp / 'out'), '--opts', *opts], 4, None),
        'predict corrupt checkpoint': (['-m', 'tools.predict', '--resume', corrupt, good], 2, 'corrupt.pth'),
        'predict unreadable video': (['-m', 'tools.predict', '--resume', ckpt, broken, '--device', 'cpu',
                                      '--workers', '0'], 4, 'broken.mp4'),
        'visualize corrupt checkpoint': (['-m', 'tools.visualize', good, '--resume', corrupt, '--out',
                                          str(tmp / 'vis')], 2, 'corrupt.pth'),
        'publish corrupt checkpoint': (['-m', 'tools.publish', corrupt, str(tmp / 'release.pth')], 2, 'corrupt.pth'),
        'report missing folder': (['-m', 'tools.report', str(tmp / 'missing')], 2, 'missing'),
        'flops bad value': (['-m', 'tools.flops', '--cfg', TOY_CFG, '--opts', 'DATA.NUM_FRAMES', '0'], 2,
                            'DATA.NUM_FRAMES'),
        'prepare impossible --out': (['-m', 'datasets.prepare', 'kinetics400', '--annotations', str(tmp / 'k400'),
                                      '--videos', str(tmp / 'videos'), '--out', str(tmp / 'a_file' / 'lists')], 2,
                                     'a_file'),
        'toy bad --out': (['-m', 'datasets.toy', '--out', str(tmp / 'a_file'), '--num-train', '1'], 2, 'a_file'),
    }


CASES = ['main bad value', 'main corrupt checkpoint', 'main unreadable, TEST.ON_UNREADABLE error',
         'predict corrupt checkpoint', 'predict unreadable video', 'visualize corrupt checkpoint',
         'publish corrupt checkpoint', 'report missing folder', 'flops bad value', 'prepare impossible --out',
         'toy bad --out']


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES)
def test_exit_code(files, case):
    args, expected, named = _cases(files)[case]
    code, err = _run(args)
    assert code == expected, f'{case}: exit {code}\n{err[-3000:]}'
    assert 'Traceback' not in err and 'terminate called' not in err, err[-3000:]
    if named is not None:
        errors = [line for line in err.splitlines() if 'error' in line.lower()]
        assert len(errors) == 1 and named in errors[0], err[-3000:]
