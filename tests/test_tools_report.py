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


def _bands(mask):
    """(start, end) index runs where ``mask`` is true."""
    idx = np.nonzero(mask)[0]
    if not idx.size:
        return []
    splits = np.nonzero(np.diff(idx) > 1)[0]
    starts = np.r_[idx[0], idx[splits + 1]]
    ends = np.r_[idx[splits], idx[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


def _picture(synthetic, top=3):
    folder, _ = synthetic
    preds = report.read_predictions(str(folder / 'predictions.csv'))
    k = len(NAMES)
    cm = report.confusion_matrix(preds.labels, preds.topk[:, 0], k)
    acc = report.per_class_accuracy(preds.labels, preds.topk, k)['top1']
    order = report.class_order(cm, acc, 'cluster')
    pairs = report.confused_pairs(cm)[:top]
    title = ('14 videos, 5 of 6 classes; top-1 64.29%, top-5 100.00%, mean class accuracy 65.00%; order: cluster; '
             + 'a long title that must wrap, ' * 4 + 'instead of being cut')
    layout = report.confusion_layout(cm, NAMES, order, pairs, title, 'linear')
    img = report.render_confusion(cm, NAMES, order, pairs, title)
    return cm, pairs, layout, np.asarray(img.convert('RGB')).astype(int)


def test_picture_numbers_sit_on_their_circles(synthetic):
    cm, pairs, layout, arr = _picture(synthetic)
    assert layout.size == (arr.shape[1], arr.shape[0])
    pos = {c: i for i, c in enumerate(layout.shown)}
    red = (arr[..., 0] > 150) & (arr[..., 1] < 120) & (arr[..., 2] < 120)
    yy, xx = np.mgrid[:arr.shape[0], :arr.shape[1]]
    from PIL import ImageDraw
    assert [m[0] for m in layout.marks] == [1, 2, 3]
    for (n, (cx, cy), r, (lx, ly)), (a, b, _, _) in zip(layout.marks, pairs):
        # the circle is centred on the pair's cell (row = true class, column = prediction) ...
        assert (cx, cy) == layout.cell_centre(pos[a], pos[b])
        # ... and its number is centred on the circle itself
        assert np.hypot(lx - cx, ly - cy) == pytest.approx(r)
        # in the picture: the red pixels near the number that are not the ring are the digit, centred there
        ring = Image.new('L', (arr.shape[1], arr.shape[0]))
        ImageDraw.Draw(ring).ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=2)
        digit = red & (np.asarray(ring) == 0) & (np.hypot(xx - lx, yy - ly) <= 9)
        assert digit.sum() > 5, n
        # (the old placement, beside the circle's bounding box, put it 7 px or more off this point)
        assert abs(xx[digit].mean() - lx) <= 3 and abs(yy[digit].mean() - ly) <= 3, n


def test_picture_axis_names_are_centred_on_their_rows_and_columns(synthetic):
    cm, _, layout, arr = _picture(synthetic)
    k, cell, x0, y0 = len(layout.shown), layout.cell, layout.x0, layout.y0
    assert layout.shown == [c for c in layout.shown if c != 5] and 5 not in layout.shown  # no videos, never predicted
    dark = arr.sum(-1) < 300
    rows = _bands(dark[y0:y0 + k * cell, 10:x0 - 2].any(1))
    assert len(rows) == k
    for i, (top, bottom) in enumerate(rows):
        assert abs(y0 + (top + bottom) / 2 - layout.cell_centre(i, i)[1]) <= 2.5, i
    cols = _bands(dark[y0 - layout.x0 + 10:y0 - 3, x0:x0 + k * cell].any(0))
    assert len(cols) == k
    for j, (left, right) in enumerate(cols):
        assert abs(x0 + (left + right) / 2 - layout.cell_centre(j, j)[0]) <= 2.5, j


def test_picture_title_is_whole_and_the_scale_fits_small_evaluations(synthetic):
    _, _, layout, arr = _picture(synthetic)
    from tools import _render
    title = ' '.join(layout.title_lines)
    assert title.endswith('instead of being cut') and '...' not in title and len(layout.title_lines) >= 2
    assert all(_render.text_size(line, _render.font(12))[0] <= arr.shape[1] - 20 for line in layout.title_lines)
    assert 'linear scale' in ' '.join(layout.subtitle_lines)
    # one video per class: a linear 0%..100% scale (a log scale from the smallest rate was '100.00% ... 100%')
    t, low, scale = report.confusion_colours(np.eye(4), largest_class=1)
    assert (low, scale) == ('0%', 'linear') and np.array_equal(t, np.eye(4))
    # a large evaluation keeps the log scale from its smallest non-zero rate
    rate = np.array([[0.9, 0.1, 0.0], [0.02, 0.98, 0.0], [0.0, 0.0, 1.0]])
    t, low, scale = report.confusion_colours(rate, largest_class=50)
    assert (low, scale) == ('2%', 'log') and t[1, 0] == 0.0 and t[2, 2] == 1.0 and 0 < t[0, 1] < 1


def test_few_videos_of_many_classes_show_only_the_classes_involved(tmp_path):
    names = [f'action {i}' for i in range(48)]
    rows = [(3, _rank(3, num_classes=48)), (17, _rank(17, num_classes=48)), (40, _rank(22, num_classes=48))]
    _write_predictions(tmp_path / 'predictions.csv', rows, names)
    out = report.make_report(str(tmp_path / 'predictions.csv'), str(tmp_path), top=5)
    img = np.asarray(Image.open(out['png']).convert('RGB')).astype(int)
    preds = report.read_predictions(str(tmp_path / 'predictions.csv'))
    cm = report.confusion_matrix(preds.labels, preds.topk[:, 0], 41)
    order = report.class_order(cm, report.per_class_accuracy(preds.labels, preds.topk, 41)['top1'], 'cluster')
    layout = report.confusion_layout(cm, names[:41], order, report.confused_pairs(cm)[:5], out['title'], 'linear')
    assert layout.size == (img.shape[1], img.shape[0])
    assert sorted(layout.shown) == [3, 17, 22, 40] and layout.cell == 24
    assert '37 classes without videos or predictions not shown' in ' '.join(layout.subtitle_lines)
    # every cell with a video is drawn in a colour (not the white of an empty matrix)
    for i, c in enumerate(layout.shown):
        for j, d in enumerate(layout.shown):
            if cm[c, d]:
                x, y = layout.cell_centre(i, j)
                assert tuple(img[int(y) + 6, int(x) + 8]) != (255, 255, 255)


def test_report_of_a_final_test_leaves_the_training_run_files_alone(synthetic, capsys):
    """The final test's predictions.csv sits among a training run's files: the report goes into RUN/report/ and
    the run folder's own files are unchanged; an evaluation folder gets its report next to its predictions."""
    run, _ = synthetic
    for name in ('best.pth', 'config.yaml', 'log_rank0.txt', 'eval_results.json'):
        (run / name).write_text(name)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert report.main([str(run), '--top', '1']) == 0
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert sorted(os.listdir(run / 'report')) == ['confused_pairs.csv', 'confusion_matrix.png',
                                                  'per_class_accuracy.csv']
    assert f"wrote {run / 'report' / 'confusion_matrix.png'}" in capsys.readouterr().out
    evaluation = run / 'eval' / 'best_4x3'
    evaluation.mkdir(parents=True)
    os.replace(run / 'predictions.csv', evaluation / 'predictions.csv')
    (evaluation / 'config.yaml').write_text('')
    assert report.main([str(evaluation)]) == 0
    assert (evaluation / 'per_class_accuracy.csv').is_file()


def test_picture_numbers_never_cover_a_count(tmp_path):
    """Small cells crowded with counts and circled neighbours: each number sits on its circle, clear of every
    count written in the cells and of the other numbers."""
    k = 40   # 25-pixel cells (capped at 24), counts in each
    cm = np.zeros((k, k), dtype=np.int64)
    for c in range(k):
        cm[c, c] = 10 + c % 10
        cm[c, (c + 1) % k] = 12     # every class confused with the next: circled cells side by side
        cm[c, (c + 2) % k] = 3
    order = list(range(k))
    pairs = report.confused_pairs(cm)[:20]
    layout = report.confusion_layout(cm, [f'c{i}' for i in range(k)], order, pairs, 'crowded', 'linear')
    assert layout.cell == report.COUNT_CELL and len(layout.counts) == 3 * k

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    for (n, (cx, cy), r, (lx, ly)), box in zip(layout.marks, layout.number_boxes):
        assert np.hypot(lx - cx, ly - cy) == pytest.approx(r)
        assert not any(overlap(box, count[3]) for count in layout.counts), n
    boxes = layout.number_boxes
    assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    # the boxes are those of the text the picture draws: rendering puts red digit pixels inside each box
    arr = np.asarray(report.render_confusion(cm, [f'c{i}' for i in range(k)], order, pairs, 'crowded'))
    red = (arr[..., 0] > 150) & (arr[..., 1] < 120) & (arr[..., 2] < 120)
    for box in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        assert red[y0:y1, x0:x1].any()


def test_picture_bright_means_many_as_in_the_other_pictures(synthetic):
    """One colour direction in every picture of the tools: bright = high (the modulator maps and the timeline
    draw high values bright too); the colour bar runs from dark (few) to bright (100%)."""
    from tools import _render

    def luminance(rgb):
        return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]

    cm, _, layout, arr = _picture(synthetic)
    pos = {c: i for i, c in enumerate(layout.shown)}
    full = layout.cell_centre(pos[2], pos[2])     # class 2: 3 of 3 right (100%)
    part = layout.cell_centre(pos[1], pos[4])     # class 1 -> 4: 1 of 4 (25%)
    # sample a corner of the cell, away from the count written in its middle
    sample = [arr[int(y) - layout.cell // 2 + 2, int(x) - layout.cell // 2 + 2] for x, y in (full, part)]
    assert luminance(sample[0]) > luminance(sample[1]) + 60
    lut = _render.colormap_lut('viridis')
    assert luminance(lut[-1]) > luminance(lut[0])   # the maps every tool uses: the high end is the bright one
