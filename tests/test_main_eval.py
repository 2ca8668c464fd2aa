"""``main.py --eval`` end to end: a checkpoint in the original's format (pickled yacs config), exact per-video
counts for world sizes 1, 2 and 3 with 6 readable videos + 1 unreadable (7 entries: shards of unequal length for
both 2 and 3 processes), no train file or ImageNet file needed,
auto-resume never replacing --resume."""
import csv
import json
import os

import pytest
import torch

from engine_helpers import TOY_CFG, make_tiny_data, run_folder, run_main, tiny_opts

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('eval')
    data = make_tiny_data(str(root / 'data'))
    lines = open(os.path.join(data, 'val.csv')).read().splitlines()
    assert len(lines) == 7
    val = os.path.join(data, 'val_with_missing.csv')
    with open(val, 'w') as f:
        f.write('\n'.join(lines[:3] + ['val/missing.mp4,3'] + lines[3:6]) + '\n')
    from models import build_model
    from engine.config import load_config
    config = load_config(TOY_CFG, tiny_opts(data))
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    original = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'lr_scheduler': {'t_initial': 100, 'warmup_t': 10, 'base_values': [0.1]},
                'max_accuracy': 12.5, 'epoch': 3, 'config': config}  # the original pickled the CfgNode itself
    ckpt = str(root / 'original_format.pth')
    torch.save(original, ckpt)
    return {'data': data, 'val': val, 'ckpt': ckpt, 'out': str(root / 'out'),
            'missing': os.path.join(data, 'val/missing.mp4')}


def _eval(setup, world_size):
    tag = f'w{world_size}'
    opts = tiny_opts(setup['data'], DATA__VAL_FILE=setup['val'], DATA__TRAIN_FILE='/nonexistent/train.csv',
                     TRAIN__PRETRAINED_PATH='/nonexistent/imagenet.pth', TEST__NUM_CLIP=2, TEST__NUM_CROP=3,
                     MODEL__INIT='xavier')   # an init the checkpoint's weights replace: not applied, not logged
    folder = run_folder(setup['out'], tag)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'last.pth'), 'wb') as f:
        f.write(b'not a checkpoint: auto-resume must not pick this up in --eval')
    run_main(['--cfg', TOY_CFG, '--output', setup['out'], '--tag', tag, '--eval', '--resume', setup['ckpt'],
              '--opts', *opts], nproc=world_size)
    folder = os.path.join(folder, 'eval', 'original_format_2x3')  # --eval's own folder inside the run's
    result = json.load(open(os.path.join(folder, 'eval_results.json')))
    rows = list(csv.DictReader(open(os.path.join(folder, 'predictions.csv'), newline='')))
    return folder, result, rows


@pytest.fixture(scope='module')
def single(setup):
    return _eval(setup, 1)


def test_original_format_checkpoint_evaluates(setup, single):
    folder, result, rows = single
    assert result['checkpoint'] == setup['ckpt'] and result['epoch'] == 3
    assert result['num_videos'] == 6 and result['num_views'] == 6 and result['views'] == '2x3'
    assert result['unreadable'] == [setup['missing']] and result['num_unreadable'] == 1
    for key in ('acc1', 'acc5', 'mean_class_acc'):
        assert 0.0 <= result[key] <= 100.0
    assert len(rows) == 6 and len({r['path'] for r in rows}) == 6
    assert setup['missing'] not in {r['path'] for r in rows}
    acc1 = 100.0 * sum(r['correct'] == '1' for r in rows) / 6
    assert result['acc1'] == pytest.approx(acc1)
    assert not os.path.exists(os.path.join(folder, 'best.pth'))  # evaluation writes no checkpoints
    assert 're-initialised' not in open(os.path.join(folder, 'log_rank0.txt')).read()


@pytest.mark.parametrize('world_size', [2, 3])
def test_counts_are_exact_for_any_world_size(setup, single, world_size):
    folder, result, rows = _eval(setup, world_size)
    assert result['world_size'] == world_size
    assert result['num_videos'] == 6 and result['unreadable'] == [setup['missing']]
    assert sorted(r['path'] for r in rows) == sorted(r['path'] for r in single[2])
    for key in ('acc1', 'acc5', 'mean_class_acc'):
        assert result[key] == pytest.approx(single[1][key])
    scores = {r['path']: float(r['top1_score']) for r in single[2]}
    assert all(abs(float(r['top1_score']) - scores[r['path']]) < 1e-5 for r in rows)
    for rank in range(world_size):
        assert os.path.exists(os.path.join(folder, f'log_rank{rank}.txt'))


def test_toy_config_evaluates_other_videos_without_generating_data(setup, tmp_path):
    """Issue 12: --eval with the toy config on a folder of real videos that has a val.csv but no train.csv /
    labels.csv evaluates them; nothing is generated (it used to stop with FileExistsError from the toy data)."""
    other = tmp_path / 'videos'
    lines = open(os.path.join(setup['data'], 'val.csv')).read().splitlines()[:3]
    for line in lines:
        name = line.split(',')[0]
        os.makedirs(os.path.dirname(other / name), exist_ok=True)
        os.link(os.path.join(setup['data'], name), other / name)
    (other / 'val.csv').write_text('\n'.join(lines) + '\n')
    val = str(other / 'val.csv')
    opts = tiny_opts(str(other), DATA__TRAIN_FILE=val, DATA__VAL_FILE=val,
                     DATA__LABEL_LIST=str(other / 'labels.csv'))
    run_main(['--cfg', TOY_CFG, '--output', str(tmp_path / 'out'), '--tag', 'other', '--eval', '--resume',
              setup['ckpt'], '--opts', *opts])
    result = json.load(open(os.path.join(run_folder(str(tmp_path / 'out'), 'other'), 'eval', 'original_format_1x1',
                                         'eval_results.json')))
    assert result['num_videos'] == 3 and result['num_unreadable'] == 0
    assert sorted(os.listdir(other)) == ['val', 'val.csv']  # no toy data written into the folder
