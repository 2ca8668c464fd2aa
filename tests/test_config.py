"""Config: defaults, the published yaml files, shipped configs, BASE inheritance, overrides, errors."""
import argparse
import glob
import os
import re

import pytest

from engine.config import (ConfigError, apply_lr_scaling, config_from_yaml_text, config_to_yaml, get_config,
                          get_default_config, keys_the_original_ignored, load_config)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, 'tests', 'assets')  # golden data, see tests/assets/README.md
SHIPPED = sorted(f for f in glob.glob(os.path.join(REPO, 'configs', '*', '*.yaml'))
                 if '_base_' not in f and not os.path.basename(f).startswith('_'))   # _recipe.yaml: a BASE file
ORIGINAL = sorted(glob.glob(os.path.join(REFERENCE, 'original_configs', '*', '*.yaml')))
assert len(ORIGINAL) == 7, f'the seven original yaml files belong in {REFERENCE}/original_configs'


def test_defaults_match_the_original():
    c = get_default_config()
    assert c.DATA.NUM_FRAMES == 32 and c.DATA.BATCH_SIZE == 128 and c.DATA.NUM_CLASSES == 101
    assert c.MODEL.FOCAL.DEPTHS == [2, 2, 6, 2] and c.MODEL.FOCAL.EMBED_DIM == 96
    assert c.TRAIN.BASE_LR == 5e-4 and c.TRAIN.WEIGHT_DECAY == 0.05 and c.TRAIN.CLIP_GRAD == 5.0
    assert c.AUG.COLOR_JITTER == 0.4 and c.AUG.FRAME_INTERVAL == 2 and c.AUG.MIXUP_SWITCH_PROB == 0.5
    assert c.TEST.NUM_CLIP == 1 and c.TEST.NUM_CROP == 1 and c.SAVE_FREQ == 1 and c.PRINT_FREQ == 100


@pytest.mark.parametrize('path', ORIGINAL, ids=lambda p: os.path.relpath(p, REFERENCE))
def test_original_yaml_files_load_unchanged(path):
    c = load_config(path)
    assert c.DATA.NUM_FRAMES == 8 and c.TRAIN.OPTIMIZER.NAME == 'sgd'
    assert c.TRAIN.WEIGHT_DECAY == pytest.approx(1e-4)  # '1e-4' is a string for PyYAML; yacs makes it a float
    assert c.OUTPUT == os.path.join('output', c.DATA.DATASET, c.MODEL.NAME, c.TAG)
    assert re.fullmatch(r'LR_0\.1_EP_120_OPT_sgd_FRAMES_8_[0-9a-f]{8}', c.TAG), c.TAG  # readable part + settings hash


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_configs_load(path, tmp_path):
    opts = []
    if os.sep + 'finetune' + os.sep in path:   # the class count comes from the prepared folder's label list
        (tmp_path / 'labels.csv').write_text('id,name\n0,a\n1,b\n2,c\n')
        opts = ['DATA.LABEL_LIST', str(tmp_path / 'labels.csv')]
    c = load_config(path, opts)
    assert c.DATA.NUM_CLASSES == c.MODEL.NUM_CLASSES
    assert os.path.isfile(os.path.join(REPO, c.DATA.LABEL_LIST)) or c.DATA.DATASET == 'toy' or opts


def _labels(tmp_path, count):
    path = tmp_path / f'labels{count}.csv'
    path.write_text('id,name\n' + ''.join(f'{i},class {i}, with comma\n' for i in range(count)))
    return str(path)


def test_num_classes_from_the_label_list(tmp_path):
    three = _labels(tmp_path, 3)
    for opts in (['MODEL.NUM_CLASSES', '0', 'DATA.NUM_CLASSES', '0'],   # both left at 0
                 ['MODEL.NUM_CLASSES', '0'],                            # DATA at the original's default
                 ['MODEL.NUM_CLASSES', '0', 'DATA.NUM_CLASSES', '3'],
                 ['MODEL.NUM_CLASSES', '3', 'DATA.NUM_CLASSES', '3']):  # set and agreeing
        c = load_config(None, ['DATA.LABEL_LIST', three, *opts])
        assert (c.MODEL.NUM_CLASSES, c.DATA.NUM_CLASSES) == (3, 3), opts
    # set and disagreeing: one line naming both
    with pytest.raises(ConfigError, match=r'^MODEL.NUM_CLASSES is 4 but DATA.LABEL_LIST .*labels3.csv names 3 classes'):
        load_config(None, ['DATA.LABEL_LIST', three, 'MODEL.NUM_CLASSES', '4', 'DATA.NUM_CLASSES', '4'])
    with pytest.raises(ConfigError, match='DATA.NUM_CLASSES is 5 but DATA.LABEL_LIST'):
        load_config(None, ['DATA.LABEL_LIST', three, 'MODEL.NUM_CLASSES', '0', 'DATA.NUM_CLASSES', '5'])
    # 0 needs the list
    with pytest.raises(ConfigError, match=r'MODEL.NUM_CLASSES is 0 .* DATA.LABEL_LIST .*none.csv is not found'):
        load_config(None, ['DATA.LABEL_LIST', str(tmp_path / 'none.csv'), 'MODEL.NUM_CLASSES', '0'])
    # a count set with no list to compare (the defaults' missing ucf list, an empty file not yet generated) is
    # left alone; an unreadable list is only an error when the count must come from it
    (tmp_path / 'empty.csv').write_text('')
    assert load_config(None, ['DATA.LABEL_LIST', str(tmp_path / 'empty.csv'), 'MODEL.NUM_CLASSES', '2',
                              'DATA.NUM_CLASSES', '2']).MODEL.NUM_CLASSES == 2
    with pytest.raises(ConfigError, match='DATA.LABEL_LIST: .*empty.csv: no classes listed'):
        load_config(None, ['DATA.LABEL_LIST', str(tmp_path / 'empty.csv'), 'MODEL.NUM_CLASSES', '0'])
    c = load_config(None, ['MODEL.NUM_CLASSES', '7', 'DATA.NUM_CLASSES', '7'])
    assert c.MODEL.NUM_CLASSES == 7


def test_finetune_recipe_takes_the_classes_and_its_lr_as_given(tmp_path):
    for size in ('tiny', 'base'):
        c = load_config(os.path.join(REPO, 'configs', 'finetune', f'video-focalnet_{size}.yaml'),
                        ['DATA.LABEL_LIST', _labels(tmp_path, 6)])
        assert c.MODEL.NUM_CLASSES == c.DATA.NUM_CLASSES == 6
        assert c.TRAIN.PRETRAINED_HEAD == 'new' and c.TRAIN.PRETRAINED_PATH.endswith(f'video-focalnet_{size}_k400.pth')
        lr = c.TRAIN.BASE_LR
        assert apply_lr_scaling(c, world_size=4).TRAIN.BASE_LR == lr == 1e-4   # no scaling by GPUs or batch


def test_shipped_configs_state_the_published_recipe():
    """Ours equal the original yamls except where we state what the original code really did."""
    stated = {
        ('TRAIN', 'WEIGHT_DECAY'): 0.0,     # the original's no-decay grouping caught every parameter
        ('AUG', 'MIXUP_PROB'): 1.0,         # ignored by the original: every batch was mixed
        ('TRAIN', 'AMP'): 'fp16',           # --amp-opt-level defaulted to O1 (apex fp16)
        ('AUG', 'AUTO_AUGMENT'): 'none',    # declared but never applied by the original
        ('AUG', 'REPROB'): 0.0,             # likewise
    }
    for orig in ORIGINAL:
        dataset, name = orig.split(os.sep)[-2:]
        ours = load_config(os.path.join(REPO, 'configs', dataset, name))
        theirs = load_config(orig)
        for section in ('DATA', 'MODEL', 'TRAIN', 'AUG'):
            for key, value in theirs[section].items():
                if key in ('TRAIN_FILE', 'VAL_FILE', 'ROOT') or isinstance(value, dict):
                    continue
                if key == 'GLOBAL_BATCH_SIZE':  # from the released scripts, not the yamls (test_recipe_layout.py)
                    continue
                expected = stated.get((section, key), value)
                assert ours[section][key] == expected, f'{dataset}/{name}: {section}.{key}'
        assert ours.MODEL.FOCAL == theirs.MODEL.FOCAL
        assert ours.SAVE_FREQ == theirs.SAVE_FREQ


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / 'base.yaml').write_text('DATA:\n  NUM_FRAMES: 16\n  BATCH_SIZE: 4\nTRAIN:\n  EPOCHS: 7\n')
    (tmp_path / 'mid.yaml').write_text("BASE: ['base.yaml']\nDATA:\n  BATCH_SIZE: 6\n")
    (tmp_path / 'top.yaml').write_text("BASE: ['mid.yaml']\nTRAIN:\n  EPOCHS: 9\n")
    c = load_config(str(tmp_path / 'top.yaml'), ['TRAIN.EPOCHS', '11'], batch_size=3)
    assert (c.DATA.NUM_FRAMES, c.DATA.BATCH_SIZE, c.TRAIN.EPOCHS) == (16, 3, 11)


def test_unknown_key_names_key_and_file(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('MODEL:\n  FOCAL:\n    EMBED_DIMS: 96\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml: unknown config key MODEL\.FOCAL\.EMBED_DIMS'):
        load_config(str(bad))
    with pytest.raises(ConfigError, match='TRAIN.NOPE'):
        load_config(None, ['TRAIN.NOPE', '1'])


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(ConfigError, match='TEST.NUM_CROP'):
        load_config(None, ['TEST.NUM_CROP', '2'])
    with pytest.raises(ConfigError, match='must be equal'):
        load_config(None, ['DATA.NUM_CLASSES', '10'])
    assert load_config(None, ['DATA.NUM_CLASSES', '10', 'MODEL.NUM_CLASSES', '10']).DATA.NUM_CLASSES == 10
    with pytest.raises(ConfigError, match='not found'):
        load_config(str(tmp_path / 'missing.yaml'))
    wrong_type = tmp_path / 'type.yaml'
    wrong_type.write_text('DATA:\n  NUM_FRAMES: eight\n')
    with pytest.raises(ConfigError, match='type.yaml'):
        load_config(str(wrong_type))


def test_flags_only_override_when_given():
    c = load_config(None, ['OUTPUT', 'runs', 'AMP_OPT_LEVEL', 'O0'])
    assert c.OUTPUT.startswith('runs') and c.TRAIN.AMP == 'none'
    c = load_config(None, amp_opt_level='O1', resume='x.pth', eval=True, use_checkpoint=True, output='out')
    assert c.TRAIN.AMP == 'fp16' and c.MODEL.RESUME == 'x.pth' and c.EVAL_MODE and c.TRAIN.USE_CHECKPOINT
    assert c.OUTPUT.startswith('out' + os.sep)


def test_pt_output_dir_replaces_output(monkeypatch):
    monkeypatch.setenv('PT_OUTPUT_DIR', '/tmp/elsewhere')
    assert load_config(None).OUTPUT == '/tmp/elsewhere'


def test_local_rank_from_flag_or_environment(monkeypatch):
    assert get_config(argparse.Namespace(cfg=None, opts=[], local_rank=3)).LOCAL_RANK == 3
    monkeypatch.setenv('LOCAL_RANK', '2')
    assert get_config(argparse.Namespace(cfg=None, opts=[])).LOCAL_RANK == 2


def test_lr_scaling_rule():
    c = load_config(os.path.join(REPO, 'configs', 'kinetics400', 'video-focalnet_tiny.yaml'))
    apply_lr_scaling(c, world_size=4)  # 0.1 x 8 x 4 / 512
    assert c.TRAIN.BASE_LR == pytest.approx(0.00625) and c.TRAIN.MIN_LR == pytest.approx(0.0000625)
    assert not c.TRAIN.LR_SCALING
    apply_lr_scaling(c, world_size=4)     # already final: the stored config does not scale twice
    assert c.TRAIN.BASE_LR == pytest.approx(0.00625)
    c = load_config(None, ['DATA.BATCH_SIZE', '8', 'TRAIN.BASE_LR', '0.1', 'TRAIN.ACCUMULATION_STEPS', '16'])
    apply_lr_scaling(c, world_size=4)
    assert c.TRAIN.BASE_LR == pytest.approx(0.1)
    c = load_config(None, ['TRAIN.LR_SCALING', 'False', 'TRAIN.BASE_LR', '0.1'])
    apply_lr_scaling(c, world_size=64)
    assert c.TRAIN.BASE_LR == 0.1


def test_yaml_text_round_trip():
    c = load_config(os.path.join(REPO, 'configs', 'ssv2', 'video-focalnet_base.yaml'))
    back = config_from_yaml_text(config_to_yaml(c))
    assert config_to_yaml(back) == config_to_yaml(c)


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_a_runs_config_yaml_given_back_as_cfg_is_the_same_config(path, tmp_path):
    """What a run writes as config.yaml (bases merged, LRs scaled) loads as --cfg to the same config and the
    same run folder; with a BASE: entry left in it, the copy looked for its base beside itself."""
    opts = []
    if os.sep + 'finetune' + os.sep in path:  # the class count comes from the label list of the user's folder
        (tmp_path / 'labels.csv').write_text('0,walk\n1,run\n2,jump\n')
        opts = ['DATA.LABEL_LIST', str(tmp_path / 'labels.csv')]
    first = load_config(path, opts, output=str(tmp_path / 'out'))
    written = config_to_yaml(apply_lr_scaling(first.clone(), world_size=8))
    copy = tmp_path / 'run' / 'config.yaml'
    copy.parent.mkdir()
    copy.write_text(written)
    again = load_config(str(copy))
    assert config_to_yaml(again) == written
    assert again.OUTPUT == first.OUTPUT


def test_keys_the_original_ignored_are_listed_for_original_yamls_only():
    for path in glob.glob(os.path.join(REPO, 'configs', '*', 'video-focalnet_*.yaml')):
        # the toy and fine-tuning recipes are not the published one (their weight decay is deliberate)
        if os.sep + 'toy' + os.sep not in path and os.sep + 'finetune' + os.sep not in path:
            assert keys_the_original_ignored(load_config(path)) == [], path
    original = os.path.join(REFERENCE, 'original_configs', 'kinetics400', 'video-focalnet_tiny.yaml')
    listed = ' | '.join(keys_the_original_ignored(load_config(original)))
    for expected in ('TRAIN.WEIGHT_DECAY 0.0001', 'AUG.AUTO_AUGMENT rand-m9-mstd0.5-inc1', 'AUG.REPROB 0.25',
                     'AUG.MIXUP_PROB 0.5'):
        assert expected in listed


def test_default_config_builds_a_model():
    from models import MODEL_TYPES, build_model
    config = get_config()
    assert config.MODEL.TYPE in MODEL_TYPES
    assert sum(p.numel() for p in build_model(config).parameters()) > 0


def test_every_default_key_has_a_comment():
    """engine/defaults.py: one comment per key (on its line or on the lines just above)."""
    lines = open(os.path.join(REPO, 'engine', 'defaults.py')).read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith('_C.') and ' = CN(' not in line:
            assert '#' in line or lines[i - 1].lstrip().startswith('#'), line


@pytest.mark.parametrize('size', ['tiny', 'small', 'base'])
def test_the_original_readme_config_names_resolve(size, monkeypatch, tmp_path):
    """The original README's `configs/kinetics400/video_focalnet_base.yaml` (underscores) is the shipped
    video-focalnet_base.yaml, found by a lookup (no copies), also when started from another folder."""
    shipped = load_config(os.path.join(REPO, 'configs', 'kinetics400', f'video-focalnet_{size}.yaml'))
    assert load_config(f'configs/kinetics400/video_focalnet_{size}.yaml') == shipped
    monkeypatch.chdir(tmp_path)
    assert load_config(f'configs/kinetics400/video_focalnet_{size}.yaml') == shipped
    assert not glob.glob(os.path.join(REPO, 'configs', '*', 'video_focalnet_*.yaml'))  # a lookup, not copies


def test_an_unknown_config_gets_did_you_mean_with_the_closest_files():
    with pytest.raises(ConfigError) as e:
        load_config('configs/kinetics400/video_focalnet_huge.yaml')
    message = str(e.value)
    assert '\n' not in message and 'config file not found' in message and 'working directory' in message
    assert 'did you mean configs/kinetics400/video-focalnet_' in message
    with pytest.raises(ConfigError, match=r'did you mean (\S+ or )*configs/kinetics400/video-focalnet_tiny.yaml'):
        load_config('video_focalnet_tiny.yaml')  # the folder left out (the fine-tuning config of that name may come first)
    with pytest.raises(ConfigError, match='did you mean configs/ssv2/video-focalnet_base.yaml'):
        load_config('configs/ssv2/video-focalnet_bsae.yaml')


def test_eval_writes_into_its_own_folder_of_the_run():
    """--eval's OUTPUT: <run folder>/eval/<checkpoint stem>_<clips>x<crops>, the run folder being the
    checkpoint's when it is a run folder and no output was chosen, else the one the flags name."""
    c = load_config(None, ['TEST.NUM_CLIP', '4', 'TEST.NUM_CROP', '3'], eval=True,
                    resume='ckpts/video-focalnet_k400.pth', output='runs', tag='t')
    assert c.OUTPUT == os.path.join('runs', c.DATA.DATASET, c.MODEL.NAME or c.MODEL.TYPE, 't', 'eval',
                                    'video-focalnet_k400_4x3')
    assert load_config(None, resume='x.pth').OUTPUT == load_config(None).OUTPUT  # training: the run folder


def test_eval_of_a_run_checkpoint_lands_in_that_run(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.yaml').write_text('')
    c = load_config(None, eval=True, resume=str(run / 'best.pth'))
    assert c.OUTPUT == str(run / 'eval' / 'best_1x1')
    c = load_config(None, eval=True, resume=str(run / 'best.pth'), output=str(tmp_path / 'o'))  # flags win
    assert c.OUTPUT.startswith(str(tmp_path / 'o') + os.sep) and c.OUTPUT.endswith(os.path.join('eval', 'best_1x1'))


def test_pretrained_empty_starts_from_scratch():
    c = load_config(os.path.join(REPO, 'configs', 'kinetics400', 'video-focalnet_tiny.yaml'), pretrained='')
    assert c.TRAIN.PRETRAINED_PATH == ''


TOY = os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml')


def test_the_default_tag_changes_with_every_training_setting_but_not_with_speed_keys():
    """The tag was derived from LR, epochs, optimizer and frames only: another weight decay shared the folder."""
    plain = load_config(TOY)
    assert re.fullmatch(r'LR_\S+_EP_\d+_OPT_\w+_FRAMES_\d+_[0-9a-f]{8}', plain.TAG), plain.TAG
    assert load_config(TOY, ['TRAIN.WEIGHT_DECAY', '0.1']).TAG != plain.TAG
    assert load_config(TOY, ['AUG.LABEL_SMOOTH', '0.0']).TAG != plain.TAG
    assert load_config(TOY, ['DATA.NUM_WORKERS', '0', 'PRINT_FREQ', '7']).TAG == plain.TAG
    assert load_config(TOY, tag='mine').TAG == 'mine'


def test_a_run_may_continue_on_another_number_of_processes_with_the_same_total_batch():
    from engine.run_identity import compare_settings
    scaled = ['TRAIN.LR_SCALING', 'True']
    old = apply_lr_scaling(load_config(TOY, scaled + ['DATA.BATCH_SIZE', '8']), world_size=2)  # 16 per update
    assert compare_settings(old, 2, load_config(TOY, scaled + ['DATA.BATCH_SIZE', '4']), 4) == ([], [])
    same = load_config(TOY, scaled + ['DATA.BATCH_SIZE', '4', 'TRAIN.ACCUMULATION_STEPS', '2'])
    assert compare_settings(old, 2, same, 2) == ([], [])
    refused, _ = compare_settings(old, 2, load_config(TOY, scaled + ['DATA.BATCH_SIZE', '4']), 2)
    assert len(refused) == 1 and refused[0].startswith('total batch') and '8x1x2 -> 4x1x2' in refused[0]
    refused, _ = compare_settings(old, 2, load_config(TOY, scaled + ['DATA.BATCH_SIZE', '4', 'TRAIN.BASE_LR',
                                                                     '0.5']), 4)
    assert len(refused) == 1 and refused[0].startswith('TRAIN.BASE_LR')


def test_a_run_with_a_global_batch_continues_on_any_layout_that_reaches_it():
    """The stored config of a TRAIN.GLOBAL_BATCH_SIZE run holds the accumulation steps derived on its processes;
    the same command (the file's steps, not yet derived) continues it on any layout of that global batch."""
    from engine.layout import apply_global_batch
    from engine.run_identity import compare_settings
    recipe = ['TRAIN.LR_SCALING', 'True', 'TRAIN.GLOBAL_BATCH_SIZE', '32', 'DATA.BATCH_SIZE', '8']
    old = apply_lr_scaling(apply_global_batch(load_config(TOY, recipe), world_size=1), world_size=1)
    assert old.TRAIN.ACCUMULATION_STEPS == 4
    assert compare_settings(old, 1, load_config(TOY, recipe), 1) == ([], [])
    assert compare_settings(old, 1, load_config(TOY, recipe), 2) == ([], [])
    refused, _ = compare_settings(old, 1, load_config(TOY, recipe[:3] + ['64', 'DATA.BATCH_SIZE', '8']), 1)
    assert refused and any(r.startswith('TRAIN.GLOBAL_BATCH_SIZE 32 -> 64') for r in refused)
