"""python -m datasets.prepare on small synthetic files in each dataset's official format.

Videos are empty stand-in files: prepare only needs them to exist (decoding is datasets.check's job).
"""
import csv
import errno
import hashlib
import json
import os
import runpy
import sys

import pytest

from datasets.annotations import read_annotations, read_label_list
from datasets.prepare import check_list, describe_list
from datasets.prepare.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = os.path.join(REPO, 'labels')


def names_of(label_file):
    return read_label_list(os.path.join(LABELS, label_file))


def ids_of(label_file):
    return {name: i for i, name in enumerate(names_of(label_file))}


def touch(folder, *rel_paths):
    for rel in rel_paths:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'\0')


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_kinetics_csv(path, rows, extra_columns=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split', *extra_columns])
        for row in rows:
            writer.writerow(row)
    return path


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def lines(path):
    return path.read_text().splitlines()


# ------------------------------------------------------------------------------------------------------------
# Kinetics
# ------------------------------------------------------------------------------------------------------------
K400_TRAIN = [('abseiling', 'aaaaaaaaaaa', 10, 20, 'train', 0),
              ('zumba', 'bbbbbbbbbbb', 0, 10, 'train', 0),
              ('passing American football (in game)', 'ccccccccccc', 5, 15, 'train', 1),
              ('hurling (sport)', 'ddddddddddd', 30, 40, 'train', 0)]          # no file: missing
K400_VAL = [('abseiling', 'eeeeeeeeeee', 1, 11, 'val', 0),
            ('zumba', 'fffffffffff', 2, 12, 'val', 0)]                         # no file: missing


@pytest.fixture
def kinetics400(tmp_path):
    ann = tmp_path / 'k400' / 'annotations'
    write_kinetics_csv(ann / 'train.csv', K400_TRAIN, extra_columns=['is_cc'])
    write_kinetics_csv(ann / 'validate.csv', K400_VAL, extra_columns=['is_cc'])   # the official spelling
    write_kinetics_csv(ann / 'test.csv', [('', 'ggggggggggg', 0, 10, 'test', 0)], extra_columns=['is_cc'])
    videos = tmp_path / 'k400' / 'videos'
    touch(videos, 'train/abseiling/aaaaaaaaaaa_000010_000020.mp4',   # per-class folders
          'train/zumba/bbbbbbbbbbb_000000_000010.webm',
          'train/ccccccccccc.mp4',                                    # <youtube_id>.mp4
          'val/eeeeeeeeeee_000001_000011.mkv',
          'val/._eeeeeeeeeee_000001_000011.mkv',                      # macOS resource fork: ignored
          'val/notes.txt')
    return ann, videos, tmp_path / 'out'


def test_kinetics400_validate_csv_per_class_folders_and_missing_videos(kinetics400, capsys):
    ann, videos, out = kinetics400
    status, stdout, err = run(capsys, 'kinetics400', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0, err
    ids = ids_of('kinetics_400_labels.csv')
    assert lines(out / 'train.csv') == sorted([
        f'{videos}/train/abseiling/aaaaaaaaaaa_000010_000020.mp4,{ids["abseiling"]}',
        f'{videos}/train/zumba/bbbbbbbbbbb_000000_000010.webm,{ids["zumba"]}',
        f'{videos}/train/ccccccccccc.mp4,{ids["passing American football (in game)"]}'])
    assert lines(out / 'val.csv') == [f'{videos}/val/eeeeeeeeeee_000001_000011.mkv,{ids["abseiling"]}']
    assert lines(out / 'missing_train.txt')[1:] == ['ddddddddddd_000030_000040\thurling (sport)']
    assert lines(out / 'missing_val.txt')[1:] == ['fffffffffff_000002_000012\tzumba']
    assert f'train: listed 4, found 3, missing 1 (listed in {out}/missing_train.txt)' in stdout
    assert 'val: listed 2, found 1, missing 1' in stdout and str(ann / 'validate.csv') in stdout
    assert 'test.csv: not used' in stdout
    # the lists read back through the loader's reader, labels in range
    assert len(read_annotations(str(out / 'train.csv'), num_classes=400)) == 3

    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['dataset'] == 'kinetics400'
    assert manifest['labels'] == {'file': 'labels/kinetics_400_labels.csv', 'classes': 400,
                                  'sha256': hashlib.sha256(
                                      open(os.path.join(LABELS, 'kinetics_400_labels.csv'), 'rb').read()).hexdigest()}
    for split, n in (('train', 3), ('val', 1)):
        entry = manifest['splits'][split]
        assert (entry['file'], entry['videos'], entry['listed'], entry['missing']) == (f'{split}.csv', n, n + 1, 1)
        assert describe_list(str(out / f'{split}.csv')) == (n, entry['sha256'])
        assert check_list(str(out / f'{split}.csv')).status == 'match'


def test_rerun_is_a_no_op_and_changed_lists_need_overwrite(kinetics400, capsys):
    ann, videos, out = kinetics400
    argv = ['kinetics400', '--annotations', ann, '--videos', videos, '--out', out]
    assert run(capsys, *argv)[0] == 0
    manifest = (out / 'manifest.json').read_text()
    status, stdout, _ = run(capsys, *argv)
    assert status == 0 and 'already up to date, nothing written' in stdout
    assert (out / 'manifest.json').read_text() == manifest          # 'created' kept

    touch(videos, 'val/fffffffffff_000002_000012.mp4')             # a missing video arrived
    before = (out / 'val.csv').read_text()
    status, _, err = run(capsys, *argv)
    assert status == 2 and 'val.csv' in err and 'missing_val.txt' in err and '--overwrite' in err
    assert (out / 'val.csv').read_text() == before                  # nothing written
    status, stdout, _ = run(capsys, *argv, '--overwrite')
    assert status == 0 and 'val: listed 2, found 2, missing 0' in stdout
    assert len(lines(out / 'val.csv')) == 2 and check_list(str(out / 'val.csv')).status == 'match'


def test_kinetics600_val_csv_spelling_and_unknown_class_name(tmp_path, capsys):
    ann, videos, out = tmp_path / 'ann', tmp_path / 'videos', tmp_path / 'out'
    write_kinetics_csv(ann / 'train.csv', [('acting in play', 'aaaaaaaaaaa', 0, 10, 'train'),
                                           ('adjusting glasses', 'bbbbbbbbbbb', 0, 10, 'train')])
    write_kinetics_csv(ann / 'val.csv', [('zumba', 'ccccccccccc', 0, 10, 'val')])
    touch(videos, 'aaaaaaaaaaa_000000_000010.mp4', 'bbbbbbbbbbb_000000_000010.mp4', 'ccccccccccc_000000_000010.mp4')
    status, _, err = run(capsys, 'kinetics600', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0, err
    ids = ids_of('kinetics_600_labels.csv')
    assert [int(x.rsplit(',', 1)[1]) for x in lines(out / 'train.csv')] == [ids['acting in play'],
                                                                           ids['adjusting glasses']]
    assert lines(out / 'val.csv') == [f'{videos}/ccccccccccc_000000_000010.mp4,{ids["zumba"]}']

    write_kinetics_csv(ann / 'train.csv', [('acting in play', 'aaaaaaaaaaa', 0, 10, 'train'),
                                           ('flying a kite badly', 'bbbbbbbbbbb', 0, 10, 'train'),
                                           ('abseiling ', 'ddddddddddd', 0, 10, 'train')])  # spaces are trimmed
    out2 = tmp_path / 'out2'
    status, stdout, err = run(capsys, 'kinetics600', '--annotations', ann, '--videos', videos, '--out', out2)
    assert status == 2
    assert err.count('\n') == 1 and str(ann / 'train.csv') in err and "'flying a kite badly'" in err
    assert 'labels/kinetics_600_labels.csv' in err and 'abseiling' not in err
    assert not out2.exists()


def test_kinetics_single_csv_with_split_column_and_root(tmp_path, capsys):
    ann, videos = tmp_path / 'kinetics_all.csv', tmp_path / 'data' / 'videos'
    write_kinetics_csv(ann, [('abseiling', 'aaaaaaaaaaa', 0, 10, 'train'), ('zumba', 'bbbbbbbbbbb', 0, 10, 'validate'),
                             ('zumba', 'ccccccccccc', 0, 10, 'test')])
    touch(videos, 'aaaaaaaaaaa_000000_000010.mp4', 'bbbbbbbbbbb_000000_000010.mp4')
    out = tmp_path / 'out'
    status, stdout, err = run(capsys, 'kinetics400', '--annotations', ann, '--videos', videos, '--out', out,
                              '--root', tmp_path / 'data')
    assert status == 0, err
    assert lines(out / 'train.csv') == ['videos/aaaaaaaaaaa_000000_000010.mp4,0']
    assert lines(out / 'val.csv') == ['videos/bbbbbbbbbbb_000000_000010.mp4,399']
    assert "1 rows of split 'test' not used" in stdout
    status, _, err = run(capsys, 'kinetics400', '--annotations', ann, '--videos', videos, '--out', tmp_path / 'o2',
                         '--root', tmp_path / 'elsewhere')
    assert status == 2 and 'outside --root' in err


@pytest.mark.parametrize('case', ['both_val_files', 'no_video_found', 'stored_twice', 'in_two_splits',
                                  'one_file_two_rows', 'conflicting_duplicate', 'bad_time', 'missing_column'])
def test_kinetics_errors(tmp_path, capsys, case):
    ann, videos, out = tmp_path / 'ann', tmp_path / 'videos', tmp_path / 'out'
    train = [('abseiling', 'aaaaaaaaaaa', 0, 10, 'train')]
    val = [('zumba', 'bbbbbbbbbbb', 0, 10, 'val')]
    files = ['aaaaaaaaaaa_000000_000010.mp4', 'bbbbbbbbbbb_000000_000010.mp4']
    expected = {'both_val_files': 'both validate.csv and val.csv exist',
                'no_video_found': "none of the 1 videos of split 'val'",
                'stored_twice': 'exist more than once',
                'in_two_splits': "(aaaaaaaaaaa_000000_000010 of 'train', aaaaaaaaaaa_000000_000010 of 'val')",
                'one_file_two_rows': "(aaaaaaaaaaa_000000_000010 of 'train', aaaaaaaaaaa_000020_000030 of 'train')",
                'conflicting_duplicate': 'listed twice with different classes',
                'bad_time': "time_start 'soon' is not a number",
                'missing_column': 'expected the columns label,youtube_id,time_start,time_end'}[case]
    if case == 'both_val_files':
        write_kinetics_csv(ann / 'val.csv', val)
    if case == 'no_video_found':
        files = files[:1]
    if case == 'stored_twice':
        files.append('copy/aaaaaaaaaaa_000000_000010.mp4')
    if case == 'in_two_splits':
        val.append(tuple(train[0]))
    if case == 'one_file_two_rows':   # two segments of one YouTube video, stored as <youtube_id>.mp4
        train.append(('zumba', 'aaaaaaaaaaa', 20, 30, 'train'))
        files[0] = 'aaaaaaaaaaa.mp4'
    if case == 'conflicting_duplicate':
        train.append(('zumba', 'aaaaaaaaaaa', 0, 10, 'train'))
    if case == 'bad_time':
        train.append(('zumba', 'ccccccccccc', 'soon', 10, 'train'))
    write_kinetics_csv(ann / 'train.csv', train)
    write_kinetics_csv(ann / 'validate.csv', val)
    if case == 'missing_column':
        (ann / 'validate.csv').write_text('youtube_id,time_start,time_end,split\nbbbbbbbbbbb,0,10,test\n')
    touch(videos, *files)
    status, _, err = run(capsys, 'kinetics400', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 2 and expected in err and err.startswith('error: ') and err.count('\n') == 1
    assert not out.exists()


def test_identical_duplicate_rows_are_listed_once(tmp_path, capsys):
    ann, videos, out = tmp_path / 'ann', tmp_path / 'videos', tmp_path / 'out'
    write_kinetics_csv(ann / 'train.csv', [('abseiling', 'aaaaaaaaaaa', 0, 10, 'train')] * 2)
    write_kinetics_csv(ann / 'validate.csv', [('zumba', 'bbbbbbbbbbb', 0, 10, 'val')])
    touch(videos, 'aaaaaaaaaaa_000000_000010.mp4', 'bbbbbbbbbbb_000000_000010.mp4')
    status, stdout, _ = run(capsys, 'kinetics400', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0 and 'train: listed 2, found 1, missing 0, 1 repeated entries listed once' in stdout
    assert len(lines(out / 'train.csv')) == 1


# ------------------------------------------------------------------------------------------------------------
# Something-Something V2
# ------------------------------------------------------------------------------------------------------------
def ssv2_template(name):
    """The official template of a class: each 'something' is a '[something]' placeholder."""
    return name.replace('something', '[something]').replace('Something', '[Something]')


def ssv2_record(video_id, name):
    return {'id': str(video_id), 'label': name.replace('something', 'a cup'), 'template': ssv2_template(name),
            'placeholders': ['a cup'] * name.count('something')}


def test_ssv2_names_with_commas_labels_json_and_missing(tmp_path, capsys):
    names = names_of('ssv2_174_labels.csv')
    with_commas = [n for n in names if ',' in n]
    assert 'Putting something, something and something on the table' in with_commas
    ann, videos, out = tmp_path / 'labels', tmp_path / '20bn-something-something-v2', tmp_path / 'out'
    write_json(ann / 'labels.json', {n: str(i) for i, n in enumerate(names)})
    write_json(ann / 'train.json', [ssv2_record(100 + i, n) for i, n in enumerate(with_commas)])
    write_json(ann / 'validation.json', [ssv2_record(7, names[0]), ssv2_record(8, names[173])])
    write_json(ann / 'test.json', [{'id': '9'}])
    touch(videos, *[f'{100 + i}.webm' for i in range(len(with_commas) - 1)], '7.webm')
    status, stdout, err = run(capsys, 'ssv2', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0, err
    assert f'{ann / "labels.json"}: same 174 names and ids as labels/ssv2_174_labels.csv' in stdout
    assert 'test.json: not used (no labels)' in stdout
    rows = read_annotations(str(out / 'train.csv'), num_classes=174)
    assert sorted(label for _, label in rows) == sorted(names.index(n) for n in with_commas[:-1])
    assert (f'{videos}/100.webm', names.index(with_commas[0])) in rows
    assert lines(out / 'missing_train.txt')[1:] == [f'{100 + len(with_commas) - 1}\t{with_commas[-1]}']
    assert lines(out / 'val.csv') == [f'{videos}/7.webm,0']
    assert f'val: listed 2, found 1, missing 1' in stdout


def test_ssv2_official_prefixed_names_and_a_disagreeing_labels_json(tmp_path, capsys):
    names = names_of('ssv2_174_labels.csv')
    ann, videos, out = tmp_path / 'labels', tmp_path / 'videos', tmp_path / 'out'
    official = {ssv2_template(n): str(i) for i, n in enumerate(names)}   # bracketed keys are accepted too
    official[ssv2_template(names[0])], official[ssv2_template(names[1])] = '1', '0'
    write_json(ann / 'something-something-v2-labels.json', official)
    write_json(ann / 'something-something-v2-train.json', [ssv2_record(1, names[0])])
    write_json(ann / 'something-something-v2-validation.json', [ssv2_record(2, names[1])])
    touch(videos, '1.webm', '2.webm')
    status, stdout, _ = run(capsys, 'ssv2', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0
    assert 'differs from labels/ssv2_174_labels.csv: 2 names with other ids' in stdout
    assert lines(out / 'train.csv') == [f'{videos}/1.webm,0']              # labels/ wins
    assert lines(out / 'val.csv') == [f'{videos}/2.webm,1']


def test_ssv2_unknown_template(tmp_path, capsys):
    names = names_of('ssv2_174_labels.csv')
    ann, videos = tmp_path / 'labels', tmp_path / 'videos'
    write_json(ann / 'train.json', [ssv2_record(1, names[0]), ssv2_record(2, 'Juggling something, badly')])
    write_json(ann / 'validation.json', [ssv2_record(3, names[1])])
    touch(videos, '1.webm', '2.webm', '3.webm')
    status, _, err = run(capsys, 'ssv2', '--annotations', ann, '--videos', videos, '--out', tmp_path / 'out')
    assert status == 2 and str(ann / 'train.json') in err and "'Juggling something, badly'" in err


# ------------------------------------------------------------------------------------------------------------
# Diving-48 V2
# ------------------------------------------------------------------------------------------------------------
def diving48_files(ann, vocab, train, test):
    write_json(ann / 'Diving48_vocab.json', vocab)
    write_json(ann / 'Diving48_V2_train.json',
               [{'vid_name': v, 'label': label, 'start_frame': 0, 'end_frame': 40} for v, label in train])
    write_json(ann / 'Diving48_V2_test.json',
               [{'vid_name': v, 'label': label, 'start_frame': 0, 'end_frame': 40} for v, label in test])


def test_diving48_vocabulary_ids_test_split_and_missing(tmp_path, capsys):
    names = names_of('diving_48_labels.csv')
    vocab = [n.split('_') for n in names]
    ann, videos, out = tmp_path / 'Diving48', tmp_path / 'rgb', tmp_path / 'out'
    diving48_files(ann, vocab, [('-mmq0PT-u8k_00155', 0), ('-mmq0PT-u8k_00156', 47), ('zzz_00001', 3)],
                   [('abc_00010', 12)])
    touch(videos, '-mmq0PT-u8k_00155.mp4', '-mmq0PT-u8k_00156.mp4', 'abc_00010.mp4')
    status, stdout, err = run(capsys, 'diving48', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0, err
    assert 'Diving48_vocab.json: same 48 names and ids as labels/diving_48_labels.csv' in stdout
    assert lines(out / 'train.csv') == [f'{videos}/-mmq0PT-u8k_00155.mp4,0', f'{videos}/-mmq0PT-u8k_00156.mp4,47']
    assert lines(out / 'test.csv') == [f'{videos}/abc_00010.mp4,12']      # the config's DATA.VAL_FILE
    assert lines(out / 'missing_train.txt')[1:] == [f'zzz_00001\t{names[3]}']
    assert set(json.loads((out / 'manifest.json').read_text())['splits']) == {'train', 'test'}


def test_diving48_vocabulary_in_another_order_maps_by_name(tmp_path, capsys):
    names = names_of('diving_48_labels.csv')
    vocab = [n.split('_') for n in names]
    vocab[0], vocab[5] = vocab[5], vocab[0]
    ann, videos, out = tmp_path / 'Diving48', tmp_path / 'rgb', tmp_path / 'out'
    diving48_files(ann, vocab, [('a_1', 0)], [('b_1', 5)])
    touch(videos, 'a_1.mp4', 'b_1.mp4')
    status, stdout, _ = run(capsys, 'diving48', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0 and '2 names with other ids' in stdout
    assert lines(out / 'train.csv') == [f'{videos}/a_1.mp4,5'] and lines(out / 'test.csv') == [f'{videos}/b_1.mp4,0']


@pytest.mark.parametrize('case', ['unknown_name', 'label_outside_vocab'])
def test_diving48_errors(tmp_path, capsys, case):
    vocab = [n.split('_') for n in names_of('diving_48_labels.csv')]
    ann, videos = tmp_path / 'Diving48', tmp_path / 'rgb'
    if case == 'unknown_name':
        vocab[2] = ['Back', '9som', 'NoTwis', 'TUCK']
    diving48_files(ann, vocab, [('a_1', 2 if case == 'unknown_name' else 48)], [('b_1', 1)])
    touch(videos, 'a_1.mp4', 'b_1.mp4')
    status, _, err = run(capsys, 'diving48', '--annotations', ann, '--videos', videos, '--out', tmp_path / 'out')
    assert status == 2 and 'Diving48_V2_train.json' in err
    assert ("'Back_9som_NoTwis_TUCK'" if case == 'unknown_name' else 'label 48 is not an index') in err


# ------------------------------------------------------------------------------------------------------------
# ActivityNet v1.3
# ------------------------------------------------------------------------------------------------------------
def anet_video(subset, *labels):
    return {'subset': subset, 'duration': 100.0, 'url': 'https://www.youtube.com/watch?v=x',
            'annotations': [{'label': label, 'segment': [10.0 * i, 10.0 * i + 5]} for i, label in enumerate(labels)]}


def test_activitynet_majority_label_testing_skipped_and_file_names(tmp_path, capsys):
    ann, videos, out = tmp_path / 'activity_net.v1-3.min.json', tmp_path / 'videos', tmp_path / 'out'
    write_json(ann, {'version': 'VERSION 1.3', 'taxonomy': [], 'database': {
        'AAAAAAAAAAA': anet_video('training', 'BMX'),
        'BBBBBBBBBBB': anet_video('training', 'Curling', 'Croquet', 'Croquet'),      # most frequent wins
        'CCCCCCCCCCC': anet_video('training', 'Curling', 'Croquet'),                 # tie: the first listed
        'DDDDDDDDDDD': anet_video('training', 'BMX'),                                # missing
        'EEEEEEEEEEE': anet_video('validation', 'Playing ten pins'),
        'FFFFFFFFFFF': anet_video('testing'),
    }})
    touch(videos, 'v_AAAAAAAAAAA.mp4', 'v_BBBBBBBBBBB.mkv', 'CCCCCCCCCCC.mp4', 'v_EEEEEEEEEEE.webm',
          'v_FFFFFFFFFFF.mp4')
    status, stdout, err = run(capsys, 'activitynet', '--annotations', ann, '--videos', videos, '--out', out)
    assert status == 0, err
    ids = ids_of('activitynet_200_labels.csv')
    assert lines(out / 'train.csv') == [f'{videos}/CCCCCCCCCCC.mp4,{ids["Curling"]}',
                                        f'{videos}/v_AAAAAAAAAAA.mp4,{ids["BMX"]}',
                                        f'{videos}/v_BBBBBBBBBBB.mkv,{ids["Croquet"]}']
    assert lines(out / 'val.csv') == [f'{videos}/v_EEEEEEEEEEE.webm,{ids["Playing ten pins"]}']
    assert lines(out / 'missing_train.txt')[1:] == ['DDDDDDDDDDD\tBMX']
    assert '1 testing videos not used (no labels)' in stdout
    assert 'train: 2 videos have segments of different classes' in stdout
    # the folder holding the JSON works as --annotations too
    status, _, _ = run(capsys, 'activitynet', '--annotations', tmp_path, '--videos', videos, '--out', tmp_path / 'o2')
    assert status == 0 and (tmp_path / 'o2' / 'train.csv').read_text() == (out / 'train.csv').read_text()


def test_activitynet_unknown_label(tmp_path, capsys):
    ann, videos = tmp_path / 'activity_net.v1-3.min.json', tmp_path / 'videos'
    write_json(ann, {'database': {'A': anet_video('training', 'BMX'), 'B': anet_video('validation', 'Bowling')}})
    touch(videos, 'v_A.mp4', 'v_B.mp4')
    status, _, err = run(capsys, 'activitynet', '--annotations', ann, '--videos', videos, '--out', tmp_path / 'out')
    assert status == 2 and "'Bowling'" in err and "split 'val'" in err and str(ann) in err


# ------------------------------------------------------------------------------------------------------------
# describe_list / check_list (logged by main.py) and the module entry point
# ------------------------------------------------------------------------------------------------------------
def test_describe_and_check_list(tmp_path):
    listing = tmp_path / 'val.csv'
    listing.write_text('a.mp4,1\nb.mp4,2\n')
    assert describe_list(str(listing)) == (2, hashlib.sha256(b'a.mp4,1\nb.mp4,2\n').hexdigest())
    check = check_list(str(listing))
    assert check.status == 'no manifest' and 'no manifest.json beside it' in check.message

    digest = describe_list(str(listing))[1]
    write_json(tmp_path / 'manifest.json', {'splits': {'val': {'file': 'val.csv', 'videos': 2, 'sha256': digest}}})
    check = check_list(str(listing))
    assert check.status == 'match' and check.split == 'val' and digest in check.message
    listing.write_text('a.mp4,1\n')
    check = check_list(str(listing))
    assert check.status == 'differs' and 'DIFFERS' in check.message and digest in check.message
    other = tmp_path / 'val_clean.csv'
    other.write_text('a.mp4,1\n')
    assert check_list(str(other)).status == 'not in manifest'
    (tmp_path / 'manifest.json').write_text('{')
    assert check_list(str(listing)).status == 'bad manifest'
    with pytest.raises(ValueError, match='annotation file not found'):
        describe_list(str(tmp_path / 'none.csv'))
    (tmp_path / 'latin1.csv').write_bytes(b'caf\xe9.mp4,1\n')
    with pytest.raises(ValueError, match='not UTF-8'):
        describe_list(str(tmp_path / 'latin1.csv'))


def test_check_list_compares_the_label_list(kinetics400, capsys):
    ann, videos, out = kinetics400
    assert run(capsys, 'kinetics400', '--annotations', ann, '--videos', videos, '--out', out)[0] == 0
    same = check_list(str(out / 'val.csv'), label_list=os.path.join(LABELS, 'kinetics_400_labels.csv'))
    assert same.status == 'match' and same.labels_match is True and 'label list' not in same.message
    other = check_list(str(out / 'val.csv'), label_list=os.path.join(LABELS, 'kinetics_600_labels.csv'))
    assert other.status == 'match' and other.labels_match is False
    assert 'the label list differs' in other.message and 'labels/kinetics_400_labels.csv' in other.message


def test_module_entry_point_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['prepare', 'ssv2', '--annotations', str(tmp_path / 'none'),
                                      '--videos', str(tmp_path), '--out', str(tmp_path / 'out')])
    monkeypatch.delitem(sys.modules, 'datasets.prepare.__main__', raising=False)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module('datasets.prepare', run_name='__main__')
    assert exit_info.value.code == 2 and 'not found (--annotations)' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# folder: your own videos in class subfolders
# ------------------------------------------------------------------------------------------------------------
FOLDER_CLASSES = {'waving, both hands': 5, 'high five': 4, 'Nod': 2, 'sneeze': 1}


@pytest.fixture
def own_videos(tmp_path):
    videos = tmp_path / 'my videos'
    for name, count in FOLDER_CLASSES.items():
        touch(videos, *[f'{name}/clip {i}.mp4' for i in range(count)])
    touch(videos, 'high five/deeper/extra.MOV', 'Nod/notes.txt', 'Nod/.DS_Store', 'README.md')
    return videos


def split_of(out):
    names = read_label_list(str(out / 'labels.csv'))
    return {split: sorted((path, names[label]) for path, label in read_annotations(str(out / f'{split}.csv')))
            for split in ('train', 'val')}


def test_folder_stratified_split_labels_notes_and_manifest(own_videos, tmp_path, capsys):
    # without a test split (--test-fraction 0): train and val only
    out = tmp_path / 'own'
    no_test = ['--val-fraction', '0.25', '--test-fraction', '0']
    status, stdout, err = run(capsys, 'folder', '--videos', own_videos, '--out', out, *no_test)
    assert status == 0, err
    # ids in sorted name order; names with commas and spaces survive the label list
    assert read_label_list(str(out / 'labels.csv')) == sorted(FOLDER_CLASSES)
    assert lines(out / 'labels.csv')[0] == 'id,name'
    splits = split_of(out)
    per_class = {s: {n: sum(1 for _, c in rows if c == n) for n in FOLDER_CLASSES} for s, rows in splits.items()}
    # round(n * 0.25) held out, at least 1 and at most n - 1; the single video trains; the .MOV in a subfolder counts
    assert per_class['val'] == {'waving, both hands': 1, 'high five': 1, 'Nod': 1, 'sneeze': 0}
    assert per_class['train'] == {'waving, both hands': 4, 'high five': 4, 'Nod': 1, 'sneeze': 1}
    assert not set(splits['train']) & set(splits['val'])
    assert ('high five/deeper/extra.MOV', 'high five') in splits['train'] + splits['val']
    assert 'train: 10 videos, 4 classes' in stdout and 'val: 3 videos, 3 classes' in stdout
    assert "single video" in stdout and "'sneeze'" in stdout
    assert 'left out 2 file(s)' in stdout and 'Nod/notes.txt' in stdout and 'README.md' in stdout
    assert '.DS_Store' not in stdout
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['root'] == str(own_videos) and manifest['seed'] == 0 and manifest['val_fraction'] == 0.25
    assert manifest['splits']['val']['videos'] == 3 and manifest['labels']['classes'] == 4
    assert sorted(manifest['left_out']) == ['Nod/notes.txt', 'README.md']
    # the lists are relative to the root and name existing files; main.py's check matches the manifest
    for path, _ in read_annotations(str(out / 'train.csv'), root=manifest['root']):
        assert os.path.isfile(path)
    check = check_list(str(out / 'val.csv'), label_list=str(out / 'labels.csv'))
    assert check.status == 'match' and check.labels_match is True
    # deterministic for a seed (a second run writes nothing), another seed picks other videos
    assert run(capsys, 'folder', '--videos', own_videos, '--out', out, *no_test)[1].strip() \
        .endswith('already up to date, nothing written')
    other = tmp_path / 'other'
    assert run(capsys, 'folder', '--videos', own_videos, '--out', other, *no_test,
               '--seed', '3')[0] == 0
    assert split_of(other) != splits and read_label_list(str(other / 'labels.csv')) == sorted(FOLDER_CLASSES)


def test_folder_split_does_not_move_when_a_class_is_added(own_videos, tmp_path, capsys):
    assert run(capsys, 'folder', '--videos', own_videos, '--out', tmp_path / 'a')[0] == 0
    touch(own_videos, *[f'clapping/{i}.webm' for i in range(3)])
    assert run(capsys, 'folder', '--videos', own_videos, '--out', tmp_path / 'b')[0] == 0
    before, after = split_of(tmp_path / 'a'), split_of(tmp_path / 'b')
    assert [r for r in after['val'] if r[1] != 'clapping'] == before['val']


def test_folder_train_and_val_folders_are_the_splits(tmp_path, capsys):
    videos = tmp_path / 'videos'
    touch(videos, 'train/jump/a.mp4', 'train/jump/b.mp4', 'train/run/c.mkv', 'val/jump/d.mp4', 'val/run/e.avi',
          'val/swim/f.mp4')
    out = tmp_path / 'out'
    status, stdout, _ = run(capsys, 'folder', '--videos', videos, '--out', out)
    assert status == 0
    assert split_of(out) == {'train': [('train/jump/a.mp4', 'jump'), ('train/jump/b.mp4', 'jump'),
                                       ('train/run/c.mkv', 'run')],
                             'val': [('val/jump/d.mp4', 'jump'), ('val/run/e.avi', 'run'), ('val/swim/f.mp4', 'swim')]}
    assert "only in val/" in stdout and "'swim'" in stdout
    assert json.loads((out / 'manifest.json').read_text())['layout'] == 'split folders'


@pytest.mark.parametrize('case', ['empty class', 'loose video', 'no classes', 'bad fraction', 'no val'])
def test_folder_errors_name_the_problem_and_write_nothing(tmp_path, capsys, case):
    videos = tmp_path / 'videos'
    touch(videos, 'a/1.mp4', 'a/2.mp4', 'b/1.mp4', 'b/2.mp4')
    args = []
    if case == 'empty class':
        (videos / 'c').mkdir()
        touch(videos, 'c/readme.txt')
        expected = f"{videos / 'c'}: class folder holds no video files"
    elif case == 'loose video':
        touch(videos, 'stray.mp4')
        expected = 'outside any class folder (stray.mp4)'
    elif case == 'no classes':
        videos = tmp_path / 'flat'
        videos.mkdir()
        expected = 'no class subfolders'
    elif case == 'bad fraction':
        args = ['--val-fraction', '1.5']
        expected = '--val-fraction 1.5: expected a number between 0 and 1'
    else:
        videos = tmp_path / 'singles'
        touch(videos, 'a/1.mp4', 'b/1.mp4')
        expected = "split 'val' has no videos"
    status, _, err = run(capsys, 'folder', '--videos', videos, '--out', tmp_path / 'out', *args)
    assert status == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'out').exists()


def folder_with_links(tmp_path, case):
    """A folder of class subfolders holding the symbolic (or hard) links of ``case``."""
    videos = tmp_path / 'videos'
    touch(videos, *[f'{c}/{i}.mp4' for c in 'ab' for i in range(3)], 'a/sub/deep.mp4')
    if case == 'same folder twice':
        (videos / 'a' / 'again').symlink_to('sub')               # a/again/deep.mp4 is a/sub/deep.mp4
        (videos / 'a' / 'link.mp4').symlink_to('0.mp4')
    elif case == 'parent link':
        (videos / 'a' / 'up').symlink_to('..')                   # a/up/b/... would list b's videos in a, endlessly
    elif case == 'two parent links':                              # each walk through one multiplies the other
        (videos / 'a' / 'up').symlink_to('..')
        (videos / 'b' / 'up').symlink_to('..')
    elif case == 'link into another class':
        (videos / 'b' / 'borrowed.mp4').symlink_to('../a/1.mp4')
    elif case == 'hard link into another class':
        os.link(videos / 'a' / '1.mp4', videos / 'b' / 'borrowed.mp4')
    elif case == 'class folder linked twice':
        (videos / 'c').symlink_to('a')
    return videos


def test_folder_lists_a_video_reached_through_links_once(tmp_path, capsys):
    videos = folder_with_links(tmp_path, 'same folder twice')
    out = tmp_path / 'out'
    status, _, err = run(capsys, 'folder', '--videos', videos, '--out', out, '--test-fraction', '0')
    assert status == 0, err
    rows = [p for split in split_of(out).values() for p, _ in split]
    assert sorted(rows) == sorted(['a/0.mp4', 'a/1.mp4', 'a/2.mp4', 'a/again/deep.mp4', 'b/0.mp4', 'b/1.mp4',
                                   'b/2.mp4']), rows        # a/sub/deep.mp4 and a/link.mp4 are the same files
    assert len({os.path.realpath(videos / p) for p in rows}) == len(rows)


@pytest.mark.parametrize('case', ['parent link', 'two parent links', 'link into another class',
                                  'hard link into another class', 'class folder linked twice', 'across splits'])
def test_folder_link_loops_and_one_video_in_two_places_are_refused(tmp_path, capsys, case):
    if case == 'across splits':
        videos = tmp_path / 'videos'
        touch(videos, 'train/jump/a.mp4', 'train/jump/b.mp4', 'val/jump/c.mp4')
        (videos / 'val' / 'jump' / 'd.mp4').symlink_to('../../train/jump/a.mp4')
        expected = [f"{videos}/train/jump/a.mp4 and {videos}/val/jump/d.mp4 are the same video file",
                    "in train (class 'jump') and val (class 'jump')"]
    else:
        videos = folder_with_links(tmp_path, case)
        expected = {
            'parent link': [f"{videos}/a/up: symbolic link to '..' leads back to {videos}", 'a loop'],
            'two parent links': [f"{videos}/a/up: symbolic link to '..' leads back to {videos}", 'a loop'],
            'link into another class': [f"{videos}/a/1.mp4 and {videos}/b/borrowed.mp4 are the same video file",
                                        "in class 'a' and class 'b'"],
            'hard link into another class': [f"{videos}/a/1.mp4 and {videos}/b/borrowed.mp4 are the same video",
                                             "in class 'a' and class 'b'"],
            'class folder linked twice': [f"{videos}/a/0.mp4 and {videos}/c/0.mp4 are the same video file",
                                          "in class 'a' and class 'c'"],
        }[case]
    status, _, err = run(capsys, 'folder', '--videos', videos, '--out', tmp_path / 'out')
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert all(part in err for part in expected), err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('bad, named, code', [
    ('class\nname/0.mp4', 'class\\nname: the folder name', 'U+000A (a newline)'),
    ('a/clip\n0.mp4', 'a/clip\\n0.mp4: the file name', 'U+000A (a newline)'),
    ('a/tab\there/0.mp4', 'a/tab\\there/0.mp4: the file name', 'U+0009 (a tab)'),
    ('a/x\u2028y.mp4', 'a/x\\u2028y.mp4: the file name', 'U+2028 (line separator)'),
    ('a/cr\r.mp4', 'a/cr\\r.mp4: the file name', 'U+000D (a carriage return)')])
def test_folder_names_with_control_characters_are_refused_in_one_line(tmp_path, capsys, bad, named, code):
    videos = tmp_path / 'videos'
    touch(videos, 'a/1.mp4', 'a/2.mp4', 'a/3.mp4', 'b/1.mp4', 'b/2.mp4', 'b/3.mp4', bad)
    status, _, err = run(capsys, 'folder', '--videos', videos, '--out', tmp_path / 'out')
    assert status == 2 and len(err.splitlines()) == 1, err
    assert f"error: {videos}/{named} holds the control character {code}" in err and 'rename it' in err, err
    assert not (tmp_path / 'out').exists()


def test_folder_names_starting_with_hash_or_space_survive_the_list(tmp_path, capsys):
    videos = tmp_path / 'videos'
    touch(videos, *[f'{c}/{i}.mp4' for c in ('#1 best', ' padded') for i in range(3)])
    out = tmp_path / 'out'
    assert run(capsys, 'folder', '--videos', videos, '--out', out)[0] == 0
    rows = [p for s in ('train', 'val', 'test') for p, _ in read_annotations(str(out / f'{s}.csv'),
                                                                             root=str(videos))]
    assert len(rows) == 6 and all(os.path.isfile(p) for p in rows)


def test_folder_holds_out_a_stratified_test_split(own_videos, tmp_path, capsys):
    out, val_only = tmp_path / 'own', tmp_path / 'val_only'
    status, stdout, err = run(capsys, 'folder', '--videos', own_videos, '--out', out, '--val-fraction', '0.25',
                              '--test-fraction', '0.25')
    assert status == 0, err
    names = read_label_list(str(out / 'labels.csv'))
    splits = {s: sorted((p, names[c]) for p, c in read_annotations(str(out / f'{s}.csv')))
              for s in ('train', 'val', 'test')}
    count = {s: {n: sum(1 for _, c in rows if c == n) for n in FOLDER_CLASSES} for s, rows in splits.items()}
    # 5 videos: 1 val, 1 test, 3 train; 2 videos (Nod): train and val, no test; 1 (sneeze): train only
    assert count['test'] == {'waving, both hands': 1, 'high five': 1, 'Nod': 0, 'sneeze': 0}
    assert count['val'] == {'waving, both hands': 1, 'high five': 1, 'Nod': 1, 'sneeze': 0}
    assert count['train'] == {'waving, both hands': 3, 'high five': 3, 'Nod': 1, 'sneeze': 1}
    everything = splits['train'] + splits['val'] + splits['test']
    assert len(set(everything)) == len(everything) == 13
    assert "too few for train, val and test (not in test): 'Nod'" in stdout and 'test: 2 videos, 2 classes' in stdout
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['test_fraction'] == 0.25 and manifest['splits']['test']['videos'] == 2
    assert check_list(str(out / 'test.csv')).status == 'match'
    # val is the same videos with or without a test split: the test videos come out of train
    assert run(capsys, 'folder', '--videos', own_videos, '--out', val_only, '--val-fraction', '0.25',
               '--test-fraction', '0')[0] == 0
    assert split_of(val_only)['val'] == splits['val'] and not (val_only / 'test.csv').exists()
    assert 'test' not in json.loads((val_only / 'manifest.json').read_text())['splits']


def test_folder_test_folder_and_test_split_errors(tmp_path, capsys):
    videos = tmp_path / 'videos'
    touch(videos, 'train/jump/a.mp4', 'val/jump/b.mp4', 'test/jump/c.mp4')
    assert run(capsys, 'folder', '--videos', videos, '--out', tmp_path / 'out')[0] == 0
    assert [p for p, _ in read_annotations(str(tmp_path / 'out' / 'test.csv'))] == ['test/jump/c.mp4']
    pairs = tmp_path / 'pairs'
    touch(pairs, 'a/1.mp4', 'a/2.mp4', 'b/1.mp4', 'b/2.mp4')
    for args, expected in ((['--test-fraction', '0.9'], '--test-fraction 0.9: expected a number from 0'),
                           ([], "split 'test' has no videos (each class needs at least 3 videos for a test split); "
                                "pass --test-fraction 0 for none")):
        status, _, err = run(capsys, 'folder', '--videos', pairs, '--out', tmp_path / 'none', *args)
        assert status == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'none').exists()


@pytest.mark.parametrize('case', ['under a file', 'read-only', 'disk full'])
def test_folder_output_that_cannot_be_written_is_one_line_and_keeps_the_old_lists(own_videos, tmp_path, capsys,
                                                                                  monkeypatch, case):
    out = tmp_path / 'own'
    assert run(capsys, 'folder', '--videos', own_videos, '--out', out, '--seed', '1')[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    target = out
    if case == 'under a file':
        target = out / 'labels.csv' / 'sub'
        expected = 'a part of the path is a file, not a folder'
    else:
        # root ignores permission bits: the kernel's answer for a read-only mount or a full disk, simulated
        code, expected = ((errno.EROFS, 'the file system is read-only') if case == 'read-only'
                          else (errno.ENOSPC, 'the disk is full'))
        real_fsync, calls = os.fsync, []

        def failing_fsync(fd):
            calls.append(fd)
            if len(calls) == 2:   # the second list: the first one is already written
                raise OSError(code, os.strerror(code))
            real_fsync(fd)
        monkeypatch.setattr(os, 'fsync', failing_fsync)
    status, _, err = run(capsys, 'folder', '--videos', own_videos, '--out', target, '--seed', '2', '--overwrite')
    monkeypatch.undo()
    assert status == 2 and len(err.splitlines()) == 1 and expected in err and 'nothing was written' in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before    # no new list beside old ones, no temp file


def test_folder_overwritten_without_a_test_split_removes_the_old_test_list(own_videos, tmp_path, capsys):
    out = tmp_path / 'own'
    assert run(capsys, 'folder', '--videos', own_videos, '--out', out)[0] == 0 and (out / 'test.csv').is_file()
    status, _, err = run(capsys, 'folder', '--videos', own_videos, '--out', out, '--test-fraction', '0')
    assert status == 2 and 'pass --overwrite' in err and (out / 'test.csv').is_file()   # refused, kept
    assert run(capsys, 'folder', '--videos', own_videos, '--out', out, '--test-fraction', '0', '--overwrite')[0] == 0
    # a test.csv left behind would name videos that are now in train to a config still pointing at it
    assert not (out / 'test.csv').exists() and sorted(p.name for p in out.iterdir()) == \
        ['labels.csv', 'manifest.json', 'train.csv', 'val.csv']
