"""Evaluation report from ``predictions.csv``: per-class accuracy, most confused pairs, confusion matrix.

    python -m tools.report OUTPUT [--labels CSV] [--top N] [--order cluster|accuracy|id] [--out DIR]

``OUTPUT`` is the output folder of an evaluation (it holds ``predictions.csv``, written by
``main.py --eval`` or by the final test after training) or a predictions csv itself. Writes,
next to it (or into ``--out``; for the final test in a training run's folder, into its ``report/``
subfolder, so that the run's own files stay as training wrote them):

* ``per_class_accuracy.csv``: one row per class, sorted by top-1 accuracy, worst first;
* ``confused_pairs.csv``: (true class, predicted class) pairs sorted by count, most frequent first;
  the ``--top`` most frequent are also printed;
* ``confusion_matrix.png``: rows = true class, columns = top-1 prediction, colour = fraction of the
  true class's videos (linear, with the counts in the cells, when no class has more than
  ``SMALL_EVALUATION`` videos; else on a log scale). Classes are ordered so that classes confused with
  each other sit next to each other (``--order cluster``, default), or by accuracy, or by id; classes with
  neither videos nor predictions are left out. Up to 60 classes are named along the axes; the ``--top``
  most frequent confusions are circled, numbered (the number on its circle) and listed beside the matrix.

The original code had no report; its evaluation only logged top-1/top-5.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from tools import _render

PREDICTIONS_FILE = 'predictions.csv'


@dataclass
class Predictions:
    """Video-level predictions read from ``predictions.csv``.

    Attributes:
        paths: video path per row.
        labels: (N,) int64 true class ids.
        topk: (N, k) int64 predicted class ids, best first.
        names: class names by id found in the file (may be incomplete: only classes that occur).
    """
    paths: list
    labels: np.ndarray
    topk: np.ndarray
    names: dict


def read_predictions(path: str) -> Predictions:
    """Read ``predictions.csv`` as ``engine.evaluator.write_predictions_csv`` writes it.

    Columns: ``path, label, label_name, correct, top1_id..topk_id, top1_name..topk_name,
    top1_score..topk_score`` (names may be empty when no label list was configured).
    """
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or '.'
        others = sorted(f for f in os.listdir(folder) if f.endswith(PREDICTIONS_FILE)) \
            if os.path.isdir(folder) else []
        hint = (f" (this folder has {', '.join(others)}: pass one of them)" if others
                else " (main.py --eval writes it into <run folder>/eval/<checkpoint>_<clips>x<crops>/, "
                "the final test of a training run into the run folder)")
        raise FileNotFoundError(f"{path}: predictions file not found{hint}")
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        ranks = sorted(int(c[3:-3]) for c in fields
                       if c.startswith('top') and c.endswith('_id') and c[3:-3].isdigit())
        missing = [c for c in ('path', 'label') if c not in fields]
        if missing or not ranks or ranks != list(range(1, len(ranks) + 1)):
            raise ValueError(f"{path}: expected columns path, label, top1_id ... topk_id; found {fields}")
        paths, labels, topk, names = [], [], [], {}
        for line, row in enumerate(reader, start=2):
            try:
                label = int(row['label'])
                ids = [int(row[f'top{j}_id']) for j in ranks]
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line}: label and top*_id must be integer class ids, "
                                 f"got {row}") from None
            labels.append(label)
            topk.append(ids)
            paths.append(row['path'])
            if row.get('label_name'):
                names.setdefault(label, row['label_name'])
            for cid, j in zip(ids, ranks):
                if row.get(f'top{j}_name'):
                    names.setdefault(cid, row[f'top{j}_name'])
    if not labels:
        raise ValueError(f"{path}: no predictions in the file")
    return Predictions(paths, np.asarray(labels, dtype=np.int64), np.asarray(topk, dtype=np.int64), names)


def confusion_matrix(labels: np.ndarray, top1: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, top1), 1)
    return cm


def per_class_accuracy(labels: np.ndarray, topk: np.ndarray, num_classes: int) -> dict:
    """Per-class counts and accuracies (NaN for classes without videos).

    Returns dict of (K,) arrays: ``videos``, ``top1`` (fraction), ``top5`` (fraction, within the first
    min(5, k) predictions).
    """
    videos = np.bincount(labels, minlength=num_classes)
    hit1 = np.bincount(labels, weights=(topk[:, 0] == labels), minlength=num_classes)
    hit5 = np.bincount(labels, weights=(topk[:, :5] == labels[:, None]).any(1), minlength=num_classes)
    with np.errstate(invalid='ignore', divide='ignore'):
        return dict(videos=videos, top1=hit1 / videos, top5=hit5 / videos)


def confused_pairs(cm: np.ndarray) -> list:
    """Off-diagonal (true, predicted, count, fraction of the true class) sorted by count, then fraction."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows = cm.sum(1)
    t, p = np.nonzero(off)
    pairs = [(int(a), int(b), int(off[a, b]), off[a, b] / rows[a]) for a, b in zip(t, p)]
    pairs.sort(key=lambda x: (-x[2], -x[3], x[0], x[1]))
    return pairs


def cluster_order(cm: np.ndarray, accuracy: np.ndarray) -> list:
    """Order classes so that classes confused with each other are neighbours.

    Average-linkage agglomerative clustering on the symmetric confusion rate; each cluster keeps its
    leaves in order and merges orient the two halves so that the most similar ends meet. Classes with no
    confusion end up at the back, worst accuracy first.
    """
    k = cm.shape[0]
    rows = np.maximum(cm.sum(1, keepdims=True), 1)
    rate = cm / rows
    sim = (rate + rate.T) / 2.0
    np.fill_diagonal(sim, 0.0)
    leaf_sim = sim.copy()
    clusters = {i: [i] for i in range(k)}
    work = sim.copy()
    np.fill_diagonal(work, -1.0)
    while True:
        flat = int(np.argmax(work))
        a, b = divmod(flat, k)
        if work[a, b] <= 0.0:
            break
        la, lb = clusters[a], clusters[b]
        options = [(la, lb), (la, lb[::-1]), (la[::-1], lb), (la[::-1], lb[::-1])]
        left, right = max(options, key=lambda o: leaf_sim[o[0][-1], o[1][0]])
        na, nb = len(la), len(lb)
        clusters[a] = list(left) + list(right)
        del clusters[b]
        merged = (na * work[a] + nb * work[b]) / (na + nb)
        work[a, :] = merged
        work[:, a] = merged
        work[a, a] = -1.0
        work[b, :] = -1.0
        work[:, b] = -1.0
    acc = np.nan_to_num(accuracy, nan=1.0)
    groups = sorted(clusters.values(), key=lambda g: (len(g) == 1, -len(g), float(acc[g].min()), g[0]))
    return [i for g in groups for i in g]


def class_order(cm: np.ndarray, accuracy: np.ndarray, mode: str) -> list:
    """Row/column order of the confusion matrix: 'cluster', 'accuracy' (worst first) or 'id'."""
    if mode == 'cluster':
        return cluster_order(cm, accuracy)
    if mode == 'accuracy':
        return [int(i) for i in np.argsort(np.nan_to_num(accuracy, nan=2.0), kind='stable')]
    if mode == 'id':
        return list(range(cm.shape[0]))
    raise ValueError(f"--order: expected cluster, accuracy or id, got {mode!r}")


# evaluations whose largest class has at most this many videos get a linear colour scale and counts in
# the cells: a log scale between 1/n and 1 is then two or three colours, and "100.00% ... 100%" when every
# class has one video
SMALL_EVALUATION = 20
# the smallest cell (pixels) that gets its video count: 24 leaves a number's room at the corners of a count
COUNT_CELL = 24


@dataclass
class ConfusionLayout:
    """Pixel geometry of the confusion-matrix picture, computed before drawing (tests check it).

    Attributes:
        shown: class ids on the axes, in display order (classes with neither videos nor predictions are left out).
        x0, y0: top-left corner of the matrix; cell: pixels per class.
        title_lines, subtitle_lines: the title and the subtitle wrapped to the picture's width (never cut).
        marks: per circled pair ``(number, (cx, cy), radius, (lx, ly))``: circle centre = the centre of the
            pair's cell, and the number drawn centred at ``(lx, ly)``, a point on the circle (upper right when
            free; else the first of the other diagonal and side points whose number box covers no count).
        counts: per cell whose video count is written ``(row, col, text, box)``, box = the text's pixel box;
            number_boxes: the pixel box of each mark's number (drawn with its outline).
        legend_x, legend_w: left edge and width of the legend of circled pairs; colorbar_w: the colour bar's
            width (under the matrix).
        line_h: text line height; size: (width, height) of the picture.
    """
    shown: list
    x0: int
    y0: int
    cell: int
    title_lines: list
    subtitle_lines: list
    marks: list
    legend_x: int
    legend_w: int
    colorbar_w: int
    line_h: int
    size: tuple
    counts: list
    number_boxes: list

    def cell_centre(self, row: int, col: int) -> tuple:
        """Centre of the cell at display position (row, col)."""
        return self.x0 + col * self.cell + self.cell / 2, self.y0 + row * self.cell + self.cell / 2


def _legend_lines(names: Sequence[str], top_pairs: Sequence[tuple]) -> list:
    return [f"{n:>2}. {names[a]}  ->  {names[b]}   {count} ({frac:.0%})"
            for n, (a, b, count, frac) in enumerate(top_pairs, start=1)]


def confusion_layout(cm: np.ndarray, names: Sequence[str], order: Sequence[int], top_pairs: Sequence[tuple],
                     title: str, scale: str = 'log', colorbar_h: int = 18) -> ConfusionLayout:
    """Where everything of :func:`render_confusion` goes (see :class:`ConfusionLayout`); ``scale`` is named in
    the subtitle."""
    used = (cm.sum(0) + cm.sum(1)) > 0
    shown = [int(c) for c in order if used[c]]
    k = len(shown)
    cell = int(max(1, min(24, 1000 // max(k, 1))))
    fnt, small = _render.font(12), _render.font(11)
    line_h = _render.text_size('Ag', fnt)[1] + 6
    margin = 10
    name_w = 0
    if k <= 60:
        name_w = min(220, max(_render.text_size(f'{c}: {names[c]}', small)[0] for c in shown) + 8)
    legend = _legend_lines(names, top_pairs)
    legend_w = min(520, max((_render.text_size(s, small)[0] for s in legend), default=0) + 16)
    colorbar_w = min(360, max(200, k * cell))
    right = max(k * cell, colorbar_w)  # the legend starts right of the matrix and of the colour bar under it
    width = max(margin + name_w + right + margin + legend_w + margin, 420)
    title_lines = _render.wrap_text(title, width - 2 * margin, fnt)
    hidden = len(names) - k
    subtitle = _render.wrap_text(
        f'rows: true class, columns: predicted class, colour: fraction of the true class ({scale} scale)'
        + (f'; {hidden} classes without videos or predictions not shown' if hidden else ''), width - 2 * margin, small)
    y0 = len(title_lines) * line_h + len(subtitle) * (line_h - 2) + margin + name_w
    x0 = margin + name_w
    height = max(y0 + k * cell + margin + colorbar_h + margin, y0 + len(legend) * line_h + margin)
    pos = {c: i for i, c in enumerate(shown)}
    measure = ImageDraw.Draw(Image.new('L', (1, 1)))
    counts = []
    # the video counts are written in the cells when the cells leave room beside them for the circles' numbers
    if scale == 'linear' and cell >= COUNT_CELL:
        count_font = _render.font(min(11, cell - 6))
        for c_row in shown:
            for c_col in shown:
                if cm[c_row, c_col]:
                    i, j = pos[c_row], pos[c_col]
                    cx, cy = x0 + j * cell + cell / 2, y0 + i * cell + cell / 2
                    text = str(int(cm[c_row, c_col]))
                    counts.append((i, j, text, measure.textbbox((cx, cy), text, font=count_font, anchor='mm')))
    radius = cell / 2 + 2 if cell >= 10 else 5.0
    marks, number_boxes = [], []
    # where a number may sit on its circle, in order of preference: upper right first, then the other corners,
    # then the sides (angles in degrees, counter-clockwise from the right, y pointing up)
    angles = (45, 135, -45, -135, 90, 0, 180, -90)

    def overlaps(box, others):
        return any(box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3] for o in others)

    for n, (a, b, _, _) in enumerate(top_pairs, start=1):
        cx = x0 + pos[b] * cell + cell / 2
        cy = y0 + pos[a] * cell + cell / 2
        placed = None
        for angle in angles:
            lx = cx + radius * np.cos(np.radians(angle))
            ly = cy - radius * np.sin(np.radians(angle))
            box = measure.textbbox((lx, ly), str(n), font=small, anchor='mm', stroke_width=2)
            if placed is None:
                placed = (lx, ly, box)   # the fallback when every point is taken
            if not overlaps(box, [c[3] for c in counts] + number_boxes):
                placed = (lx, ly, box)
                break
        lx, ly, box = placed
        marks.append((n, (cx, cy), radius, (lx, ly)))
        number_boxes.append(box)
    return ConfusionLayout(shown, x0, y0, cell, title_lines, subtitle, marks, x0 + right + margin, legend_w,
                           colorbar_w, line_h, (width, height), counts, number_boxes)


def confusion_colours(rate: np.ndarray, largest_class: int) -> tuple:
    """Colour positions in [0, 1] (1 = all of the true class) for row-normalised rates, and the scale.

    Returns ``(t, low_label, scale)``: linear for small evaluations (largest class up to
    :data:`SMALL_EVALUATION` videos), else log between the smallest non-zero rate and 1.
    """
    nonzero = rate[rate > 0]
    low = float(nonzero.min()) if nonzero.size else 1.0
    if largest_class <= SMALL_EVALUATION or low >= 1.0:
        return np.clip(rate, 0.0, 1.0), '0%', 'linear'
    span = -np.log10(low)
    with np.errstate(divide='ignore'):
        t = np.clip(1.0 + np.log10(np.where(rate > 0, rate, 1.0)) / span, 0.0, 1.0)
    return t, f'{100 * low:.2g}%', 'log'


def render_confusion(cm: np.ndarray, names: Sequence[str], order: Sequence[int],
                     top_pairs: Sequence[tuple], title: str) -> Image.Image:
    """Draw the row-normalised confusion matrix.

    Classes that have neither videos nor predictions are left out of the axes. Up to 60 shown classes get
    their names on both axes; the ``top_pairs`` are circled, numbered (the number sits on its circle) and
    listed in a legend on the right. Colours are linear for small evaluations, with the video counts written
    in cells large enough to hold them, else log-scaled (:func:`confusion_colours`).
    """
    rows = cm.sum(1, keepdims=True)
    rate_all = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    t_all, low_label, scale = confusion_colours(rate_all, int(rows.max()))
    layout = confusion_layout(cm, names, order, top_pairs, title, scale)
    shown, cell, x0, y0 = layout.shown, layout.cell, layout.x0, layout.y0
    k = len(shown)
    rate, t = (a[np.ix_(shown, shown)] for a in (rate_all, t_all))
    # bright = high, as in every picture of the tools (modulator maps, timelines); the darkest colour is kept
    # for the smallest fractions, so that one mistake stands out on the white of the empty cells
    rgb = _render.apply_colormap(0.1 + 0.9 * t, 'viridis')
    rgb[rate <= 0] = _render.BACKGROUND
    mat = Image.fromarray(rgb).resize((k * cell, k * cell), Image.NEAREST)

    fnt, small = _render.font(12), _render.font(11)
    margin, line_h = 10, layout.line_h
    img = Image.new('RGB', layout.size, _render.BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(layout.title_lines):
        draw.text((margin, 4 + i * line_h), line, fill=_render.TEXT, font=fnt)
    for i, line in enumerate(layout.subtitle_lines):
        draw.text((margin, 4 + len(layout.title_lines) * line_h + i * (line_h - 2)), line, fill=_render.TEXT,
                  font=small)
    img.paste(mat, (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x0 + k * cell, y0 + k * cell), outline=(120, 120, 120))
    if layout.counts:  # counts in the cells: white on the dark (low) end of the scale
        count_font = _render.font(min(11, cell - 6))
        for i, j, text, _ in layout.counts:
            draw.text(layout.cell_centre(i, j), text, font=count_font, anchor='mm',
                      fill=(255, 255, 255) if t[i, j] < 0.5 else _render.TEXT)
    if x0 > margin:  # class names on the axes
        for i, c in enumerate(shown):
            label = _render.fit_text(f'{c}: {names[c]}', x0 - margin - 8, small)
            cx, cy = layout.cell_centre(i, i)
            draw.text((x0 - 4, cy), label, fill=_render.TEXT, font=small, anchor='rm')
            # the column label: the same text drawn into a tile, rotated, centred over column i
            left, top, right, bottom = draw.textbbox((0, 0), label, font=small, anchor='lm')
            tile = Image.new('RGB', (right - left + 2, bottom - top + 2), _render.BACKGROUND)
            ImageDraw.Draw(tile).text((1 - left, (bottom - top + 2) / 2), label, fill=_render.TEXT, font=small,
                                      anchor='lm')
            tile = tile.rotate(90, expand=True)
            img.paste(tile, (int(round(cx - tile.width / 2)), y0 - 4 - tile.height))
    red = (220, 30, 30)
    for n, (cx, cy), r, (lx, ly) in layout.marks:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=red, width=2)
    for n, _, _, (lx, ly) in layout.marks:  # numbers after all circles: no circle crosses a number
        draw.text((lx, ly), str(n), fill=red, font=small, anchor='mm', stroke_width=2,
                  stroke_fill=_render.BACKGROUND)
    for i, line in enumerate(_legend_lines(names, top_pairs)):
        draw.text((layout.legend_x, y0 + i * line_h), _render.fit_text(line, layout.legend_w, small),
                  fill=_render.TEXT, font=small)
    bar = _render.colorbar(layout.colorbar_w, 18, 'viridis', low=low_label, high='100%', start=0.1, stop=1.0)
    img.paste(bar, (x0, y0 + k * cell + margin))
    return img


def class_names(num_classes: int, labels_csv: Optional[str], found: dict) -> list:
    """Names by id: the label list if given, else the names in predictions.csv, else the ids."""
    if labels_csv:
        from datasets import read_label_list
        names = list(read_label_list(labels_csv))
        if len(names) < num_classes:
            raise ValueError(f"{labels_csv}: {len(names)} class names, but predictions use class id "
                             f"{num_classes - 1}")
        return names
    return [found.get(i, str(i)) for i in range(num_classes)]


def write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ['  '.join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def make_report(predictions_csv: str, out_dir: str, labels_csv: Optional[str] = None, top: int = 20,
                order: str = 'cluster') -> dict:
    """Write the three report files into ``out_dir`` and return a summary dict (paths and metrics)."""
    preds = read_predictions(predictions_csv)
    k_seen = int(max(preds.labels.max(), preds.topk.max())) + 1
    names = class_names(k_seen, labels_csv, preds.names)
    k = len(names)
    acc = per_class_accuracy(preds.labels, preds.topk, k)
    cm = confusion_matrix(preds.labels, preds.topk[:, 0], k)
    pairs = confused_pairs(cm)
    os.makedirs(out_dir, exist_ok=True)

    present = np.nonzero(acc['videos'])[0]
    ranked = sorted(present.tolist(), key=lambda c: (acc['top1'][c], acc['top5'][c], c))
    worst_confusion = {}
    for a, b, count, _ in pairs:
        worst_confusion.setdefault(a, (b, count))
    per_class_path = os.path.join(out_dir, 'per_class_accuracy.csv')
    write_csv(per_class_path, ['class_id', 'name', 'videos', 'top1', 'top5', 'most_confused_with', 'count'],
              [[c, names[c], int(acc['videos'][c]), f"{acc['top1'][c]:.4f}", f"{acc['top5'][c]:.4f}",
                names[worst_confusion[c][0]] if c in worst_confusion else '',
                worst_confusion[c][1] if c in worst_confusion else 0] for c in ranked])
    pairs_path = os.path.join(out_dir, 'confused_pairs.csv')
    write_csv(pairs_path, ['true_id', 'true_name', 'pred_id', 'pred_name', 'count', 'fraction_of_true'],
              [[a, names[a], b, names[b], n, f'{f:.4f}'] for a, b, n, f in pairs])

    top1 = float((preds.topk[:, 0] == preds.labels).mean())
    top5 = float((preds.topk[:, :5] == preds.labels[:, None]).any(1).mean())
    mean_class = float(np.nanmean(acc['top1'][present]))
    title = (f"{len(preds.labels)} videos, {len(present)} of {k} classes; top-1 {100 * top1:.2f}%, "
             f"top-5 {100 * top5:.2f}%, mean class accuracy {100 * mean_class:.2f}%; order: {order}")
    png_path = os.path.join(out_dir, 'confusion_matrix.png')
    render_confusion(cm, names, class_order(cm, acc['top1'], order), pairs[:top], title).save(png_path)
    return dict(per_class=per_class_path, pairs=pairs_path, png=png_path, title=title, top1=top1, top5=top5,
                mean_class_accuracy=mean_class, videos=len(preds.labels), pair_rows=pairs[:top], names=names,
                worst=[(c, acc['top1'][c], int(acc['videos'][c])) for c in ranked[:top]])


# files only a training run's folder holds (an evaluation's folder has config.yaml and a log too)
_TRAINING_RUN_FILES = ('best.pth', 'last.pth', 'metrics.jsonl')


def default_out_dir(predictions_csv: str) -> str:
    """Where the report goes without ``--out``: next to the predictions it reads, that is into the folder of an
    evaluation (``<run>/eval/<checkpoint>_<views>/``); for the final test of a training run, whose
    predictions sit among the run's own files, into ``<run>/report/``, so the run folder keeps only what
    training wrote."""
    folder = os.path.dirname(os.path.abspath(predictions_csv))
    if any(os.path.exists(os.path.join(folder, name)) for name in _TRAINING_RUN_FILES):
        return os.path.join(folder, 'report')
    return folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m tools.report', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('output', help='evaluation output folder (holds predictions.csv) or the csv file')
    parser.add_argument('--labels', default=None, help="class-name list ('id,name' csv); default: names "
                                                       "stored in predictions.csv")
    parser.add_argument('--top', type=int, default=20, help='confused pairs to print and label (default 20)')
    parser.add_argument('--order', default='cluster', choices=('cluster', 'accuracy', 'id'),
                        help='class order of the confusion matrix (default cluster)')
    parser.add_argument('--out', default=None, help='folder for the report files (default: next to the csv; RUN/report/ for the '
                                                    'final test of a training run)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')

    csv_path = args.output
    if os.path.isdir(csv_path):
        csv_path = os.path.join(csv_path, PREDICTIONS_FILE)
    out_dir = args.out or default_out_dir(csv_path)
    try:
        summary = make_report(csv_path, out_dir, args.labels, args.top, args.order)
    except (OSError, ValueError) as e:
        from tools._common import user_error
        return user_error(e)
    names = summary['names']
    print(f"{summary['videos']} videos: top-1 {100 * summary['top1']:.2f}%, top-5 {100 * summary['top5']:.2f}%, "
          f"mean class accuracy {100 * summary['mean_class_accuracy']:.2f}%")
    print(f"\nMost confused pairs (top {args.top}):")
    print(format_table(['#', 'true class', 'predicted as', 'videos', 'of true class'],
                       [[str(i), names[a], names[b], str(n), f'{100 * f:.1f}%']
                        for i, (a, b, n, f) in enumerate(summary['pair_rows'], start=1)]))
    print(f"\nLowest top-1 accuracy (top {args.top}):")
    print(format_table(['class', 'top-1', 'videos'],
                       [[names[c], f'{100 * a:.1f}%', str(v)] for c, a, v in summary['worst']]))
    print(f"\nwrote {summary['per_class']}\nwrote {summary['pairs']}\nwrote {summary['png']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
