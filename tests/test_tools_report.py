"""tools/report.py on synthetic predictions files: exact counts, sorted outputs, a readable PNG."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tools import report

# SSv2-style names: commas inside names must survive the csv round trip
NAMES = ['Pushing something from left to right', 'Moving something up, then down', 'Holding something',
         'Opening something', 'Tearing something, just a little bit', 'Dropping something']


def _write_predictions(path, rows, names=NAMES, k=5):
    """The layout of engine.evaluator.write_predictions_csv."""
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['path', 'label', 'label_name', 'correct'] + [f'top{i}_id' for i in range(1, k + 1)]
                   + [f'top{i}_name' for i in range(1, k + 1)] + [f'top{i}_score' for i in range(1, k + 1)])
        for n, (label, ids) in enumerate(rows):
            scores = np.linspace(0.6, 0.05, k)
            w.writerow([f'videos/{n}.mp4', label, names[label], int(ids[0] == label)] + list(ids)
                       + [names[i] for i in ids] + [f'{s:.4f}' for s in scores])


def _rank(first, k=5, num_classes=len(NAMES)):
    return [first] + [c for c in range(num_classes) if c != first][:k - 1]


@pytest.fixture
def synthetic(tmp_path):
    # class 0: 4 videos, 2 right, 2 predicted as 1; class 1: 3 right, 1 -> 4; class 2: all 3 right
    # class 3: 0 of 2 right (both -> 4); class 4: 1 right; class 5: no videos
    rows = ([(0, _rank(0))] * 2 + [(0, _rank(1))] * 2 + [(1, _rank(1))] * 3 + [(1, _rank(4))]
            + [(2, _rank(2))] * 3 + [(3, _rank(4))] * 2 + [(4, _rank(4))])
    path = tmp_path / 'predictions.csv'
    _write_predictions(path, rows)
    return tmp_path, rows


def test_counts_and_outputs(synthetic):
    folder, rows = synthetic
    out = report.make_report(str(folder / 'predictions.csv'), str(folder / 'rep'), top=3)
    assert out['videos'] == len(rows)
    assert out['top1'] == pytest.approx(9 / 14)

    with open(out['per_class'], newline='') as f:
        per_class = list(csv.DictReader(f))
    # classes without videos are left out; ascending top-1, worst first
    assert [int(r['class_id']) for r in per_class] == [3, 0, 1, 2, 4]
    assert [float(r['top1']) for r in per_class] == pytest.approx([0.0, 0.5, 0.75, 1.0, 1.0])
    assert per_class[0]['name'] == NAMES[3] and per_class[0]['most_confused_with'] == NAMES[4]
    # top-5 of class 3: the 5-entry ranking starting at 4 is [4, 0, 1, 2, 3] -> contains 3
    assert float(per_class[0]['top5']) == 1.0

    with open(out['pairs'], newline='') as f:
        pairs = list(csv.DictReader(f))
    got = [(int(r['true_id']), int(r['pred_id']), int(r['count'])) for r in pairs]
    assert got == [(3, 4, 2), (0, 1, 2), (1, 4, 1)]  # by count, then by fraction of the true class
    assert pairs[2]['true_name'] == 'Moving something up, then down'
    assert [float(r['fraction_of_true']) for r in pairs] == [1.0, 0.5, 0.25]

    img = Image.open(out['png'])
    img.load()
    arr = np.asarray(img.convert('RGB'))
    assert img.format == 'PNG' and arr.std() > 10


def test_cli_prints_table_and_accepts_csv_path(synthetic, capsys):
    folder, _ = synthetic
    assert report.main([str(folder / 'predictions.csv'), '--top', '2', '--order', 'accuracy']) == 0
    printed = capsys.readouterr().out
    assert 'Pushing something from left to right' in printed and 'top-1 64.29%' in printed
    for name in ('per_class_accuracy.csv', 'confused_pairs.csv', 'confusion_matrix.png'):
        assert os.path.isfile(folder / name)


def test_labels_file_overrides_names_in_csv(synthetic, capsys):
    folder, _ = synthetic
    labels = folder / 'labels.csv'
    labels.write_text('id,name\n' + ''.join(f'{i},Class {i}, renamed\n' for i in range(len(NAMES))))
    assert report.main([str(folder), '--labels', str(labels), '--out', str(folder / 'named')]) == 0
    assert 'Class 3, renamed' in capsys.readouterr().out
    with open(folder / 'named' / 'per_class_accuracy.csv', newline='') as f:
        assert next(csv.DictReader(f))['name'] == 'Class 3, renamed'
    labels.write_text('id,name\n0,only one\n')
    assert report.main([str(folder), '--labels', str(labels)]) == 2
    assert 'class id 4' in capsys.readouterr().err


def test_runs_as_a_module_from_another_folder(synthetic):
    """`python -m tools.report` with the root on PYTHONPATH finds this project's packages (datasets, for --labels)
    from any cwd."""
    folder, _ = synthetic
    labels = folder / 'labels.csv'
    labels.write_text('id,name\n' + ''.join(f'{i},{n}\n' for i, n in enumerate(NAMES)))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get('PYTHONPATH', ''))
    done = subprocess.run([sys.executable, '-m', 'tools.report', str(folder), '--labels', str(labels), '--top', '1'],
                          cwd=str(folder), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'Opening something' in done.stdout  # the worst class, named from the label list


def test_many_classes_cluster_order_puts_confused_pairs_together(tmp_path):
    k = 400
    rng = np.random.default_rng(0)
    names = [f'class {i}, variant' for i in range(k)]
    partner = rng.permutation(k)  # each class is confused with one random partner
    rows = []
    for c in range(k):
        rows += [(c, _rank(c, num_classes=k))] * 2 + [(c, _rank(int(partner[c]), num_classes=k))]
    _write_predictions(tmp_path / 'predictions.csv', rows, names)
    preds = report.read_predictions(str(tmp_path / 'predictions.csv'))
    cm = report.confusion_matrix(preds.labels, preds.topk[:, 0], k)
    acc = report.per_class_accuracy(preds.labels, preds.topk, k)['top1']
    order = report.cluster_order(cm, acc)
    assert sorted(order) == list(range(k))
    pos = np.empty(k, dtype=int)
    pos[order] = np.arange(k)
    gaps = np.abs(pos - pos[partner])
    # random order would put partners ~133 apart on average
    assert np.median(gaps[partner != np.arange(k)]) <= 3
    out = report.make_report(str(tmp_path / 'predictions.csv'), str(tmp_path), top=10)
    img = Image.open(out['png'])
    assert img.width >= k * 2 and img.height >= k * 2  # at least 2 px per class


def test_bad_file_gives_one_line_error(tmp_path, capsys):
    (tmp_path / 'predictions.csv').write_text('video,target\na.mp4,1\n')
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error:') and 'top1_id' in err and '\n' not in err
    assert report.main([str(tmp_path / 'missing')]) == 2
    capsys.readouterr()
    os.remove(tmp_path / 'predictions.csv')
    _write_predictions(tmp_path / 'final_predictions.csv', [(0, _rank(0))])
    assert report.main([str(tmp_path)]) == 2  # the folder has only a prefixed file: say so
    assert 'final_predictions.csv' in capsys.readouterr().err
    assert report.main([str(tmp_path / 'final_predictions.csv')]) == 0
