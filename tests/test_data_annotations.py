"""Annotation files and label lists: formats, ROOT joining, clear errors, the five published label lists."""
import json
import os

import pytest

from datasets.annotations import AnnotationError, join_root, parse_annotation_lines, read_annotations, read_label_list

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = os.path.join(REPO, 'labels')


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_comma_space_header_comments_and_commas_in_paths():
    lines = ['path,label', 'a/b.mp4,3', 'dir,with,commas/c.mp4,1', 'my video.mp4 2', 'x,y.mp4 0',
             '', '# a comment', '  d.webm , 4  ']
    assert parse_annotation_lines(lines) == [('a/b.mp4', 3), ('dir,with,commas/c.mp4', 1), ('my video.mp4', 2),
                                             ('x,y.mp4', 0), ('d.webm', 4)]
    assert parse_annotation_lines(['video label', 'a.mp4 1']) == [('a.mp4', 1)]


def test_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path, 'train.csv', 'a.mp4,1\nb.mp4,one\n')
    with pytest.raises(AnnotationError, match=r"train\.csv:2: expected 'path,label' or 'path label'"):
        read_annotations(path)
    with pytest.raises(AnnotationError, match=r'^x:2: expected'):
        parse_annotation_lines(['header', 'no label here'], source='x')   # only the first line may be a header
    # a first line that looks like data is never taken for a header (it would drop a sample silently)
    for first in ('a.mp4,one', 'a.mp4', 'videos/a 3x'):
        with pytest.raises(AnnotationError, match=r'^x:1: expected'):
            parse_annotation_lines([first, 'b.mp4,1'], source='x')
    assert parse_annotation_lines(['video_id, label_id', 'b.mp4,1']) == [('b.mp4', 1)]


def test_label_range_is_checked(tmp_path):
    path = write(tmp_path, 'val.csv', 'a.mp4,0\n\nb.mp4,400\n')
    assert read_annotations(path, num_classes=401)[1] == ('b.mp4', 400)
    with pytest.raises(AnnotationError, match=r"val\.csv:3: label 400 of 'b.mp4' is outside \[0, 400\)"):
        read_annotations(path, num_classes=400)
    neg = write(tmp_path, 'neg.csv', 'a.mp4,-1\n')
    with pytest.raises(AnnotationError, match='outside'):
        read_annotations(neg, num_classes=10)


def test_root_joining_as_the_original(tmp_path):
    (tmp_path / 'videos').mkdir()
    link = tmp_path / 'link'
    os.symlink(tmp_path / 'videos', link)
    path = write(tmp_path, 'a.csv', 'x/a.mp4,0\n/abs/b.mp4,1\n')
    # an existing directory is resolved with realpath; an absolute path ignores ROOT
    assert read_annotations(path, root=str(link)) == [(os.path.join(os.path.realpath(link), 'x/a.mp4'), 0),
                                                      ('/abs/b.mp4', 1)]
    assert read_annotations(path, root='') == [('x/a.mp4', 0), ('/abs/b.mp4', 1)]
    assert join_root('not/a/dir', 'v.mp4') == 'not/a/dir/v.mp4'


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AnnotationError, match='annotation file not found'):
        read_annotations(str(tmp_path / 'nope.csv'))
    with pytest.raises(AnnotationError, match='no videos listed'):
        read_annotations(write(tmp_path, 'empty.csv', 'path,label\n'))


def test_json_annotations(tmp_path):
    path = tmp_path / 'a.json'
    path.write_text(json.dumps([{'filename': 'a.mp4', 'label': [2]}, {'filename': 'b.mp4', 'label': 0}]))
    assert read_annotations(str(path), root='') == [('a.mp4', 2), ('b.mp4', 0)]
    path.write_text(json.dumps([{'filename': 'a.mp4'}]))
    with pytest.raises(AnnotationError, match='record 0'):
        read_annotations(str(path))


@pytest.mark.parametrize('name,count,probe', [
    ('kinetics_400_labels.csv', 400, (399, 'zumba')),
    ('kinetics_600_labels.csv', 600, (599, 'zumba')),
    ('ssv2_174_labels.csv', 174, (21, 'Laying something on the table on its side, not upright')),
    ('diving_48_labels.csv', 48, (47, 'Reverse_Dive_NoTwis_TUCK')),
    ('activitynet_200_labels.csv', 200, (199, 'Playing badminton')),
])
def test_published_label_lists(name, count, probe):
    names = read_label_list(os.path.join(LABELS, name))
    assert len(names) == count
    assert names[probe[0]] == probe[1]
    assert all(names)


def test_ssv2_names_with_commas():
    names = read_label_list(os.path.join(LABELS, 'ssv2_174_labels.csv'))
    with_commas = [n for n in names if ',' in n]
    assert 'Pretending to pour something out of something, but something is empty' in with_commas
    assert len(with_commas) >= 5


def test_label_list_errors(tmp_path):
    with pytest.raises(AnnotationError, match=r'b\.csv:3: expected id 1'):
        read_label_list(write(tmp_path, 'b.csv', 'id,name\n0,a\n2,c\n'))
    with pytest.raises(AnnotationError, match=r"c\.csv:2: expected 'id,name'"):
        read_label_list(write(tmp_path, 'c.csv', 'id,name\nno comma\n'))
    with pytest.raises(AnnotationError, match='label list not found'):
        read_label_list(str(tmp_path / 'missing.csv'))
    # header optional, quotes around names removed
    assert read_label_list(write(tmp_path, 'd.csv', '0,"a, b"\n1,c\n')) == ['a, b', 'c']
