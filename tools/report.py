"""Evaluation report from ``predictions.csv``: per-class accuracy, most confused pairs, confusion matrix.

    python -m tools.report OUTPUT [--labels CSV] [--top N] [--order cluster|accuracy|id] [--out DIR]

``OUTPUT`` is the output folder of an evaluation (it holds ``predictions.csv``, written by
``main.py --eval`` or by the final test after training) or a predictions csv itself. Writes,
next to it (or into ``--out``):

* ``per_class_accuracy.csv``: one row per class, sorted by top-1 accuracy, worst first;
* ``confused_pairs.csv``: (true class, predicted class) pairs sorted by count, most frequent first;
  the ``--top`` most frequent are also printed;
* ``confusion_matrix.png``: rows = true class, columns = top-1 prediction, colour = fraction of the
  true class's videos on a log scale. Classes are ordered so that classes confused with each other sit
  next to each other (``--order cluster``, default), or by accuracy, or by id. With many classes the
  names cannot be written along the axes, so the ``--top`` most frequent confusions are circled,
  numbered and listed beside the matrix.

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
                else " (main.py --eval writes it into the output folder)")
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


def render_confusion(cm: np.ndarray, names: Sequence[str], order: Sequence[int],
                     top_pairs: Sequence[tuple], title: str) -> Image.Image:
    """Draw the row-normalised confusion matrix with log-scaled colours.

    Up to 60 classes get their names on both axes; above that only the ``top_pairs`` are circled,
    numbered and listed in a legend on the right.
    """
    k = cm.shape[0]
    cell = int(max(1, min(24, 1000 // max(k, 1))))
    rows = cm.sum(1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        rate = np.where(rows > 0, cm / np.maximum(rows, 1), 0.0)
    rate = rate[np.ix_(order, order)]
    nonzero = rate[rate > 0]
    low = float(nonzero.min()) if nonzero.size else 1.0
    # log scale from the smallest non-zero rate (one video of the largest class) to 1
    span = max(-np.log10(low), 1e-6)
    with np.errstate(divide='ignore'):
        t = np.clip(1.0 + np.log10(np.where(rate > 0, rate, 1.0)) / span, 0.0, 1.0)
    rgb = _render.apply_colormap(1.0 - 0.9 * t, 'viridis')  # yellow = rare, dark = frequent (reads on white)
    rgb[rate <= 0] = _render.BACKGROUND
    mat = Image.fromarray(rgb).resize((k * cell, k * cell), Image.NEAREST)

    fnt = _render.font(12)
    small = _render.font(11)
    label_axes = k <= 60
    axis_names = [f'{c}: {n}' for c, n in enumerate(names)]
    name_w = max(_render.text_size(n, small)[0] for n in axis_names) + 8 if label_axes else 0
    name_w = min(name_w, 220)
    legend_lines = []
    pos = {c: i for i, c in enumerate(order)}
    for n, (a, b, count, frac) in enumerate(top_pairs, start=1):
        legend_lines.append(f"{n:>2}. {names[a]}  ->  {names[b]}   {count} ({frac:.0%})")
    legend_w = min(520, max((_render.text_size(s, small)[0] for s in legend_lines), default=0) + 16)
    margin = 10
    line_h = _render.text_size('Ag', fnt)[1] + 6
    head = 2 * line_h + margin + (name_w if label_axes else 0)
    bar = _render.colorbar(min(360, max(200, k * cell)), 18, 'viridis', low=f'{low:.2%}', high='100%',
                           start=1.0, stop=0.1)
    width = margin + name_w + k * cell + margin + legend_w + margin
    height = head + k * cell + margin + bar.height + line_h + margin
    img = Image.new('RGB', (max(width, 420), max(height, head + len(legend_lines) * line_h + margin)),
                    _render.BACKGROUND)
    draw = ImageDraw.Draw(img)
    x0, y0 = margin + name_w, head
    draw.text((margin, 4), _render.fit_text(title, img.width - 2 * margin, fnt), fill=_render.TEXT, font=fnt)
    draw.text((margin, 4 + line_h),
              'rows: true class, columns: predicted class, colour: fraction of the true class (log scale)',
              fill=_render.TEXT, font=small)
    img.paste(mat, (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x0 + k * cell, y0 + k * cell), outline=(120, 120, 120))
    if label_axes:
        for i, c in enumerate(order):
            label = _render.fit_text(axis_names[c], name_w - 8, small)
            draw.text((x0 - 4, y0 + i * cell + cell // 2), label, fill=_render.TEXT, font=small, anchor='rm')
            w, h = _render.text_size(label, small)
            tile = Image.new('RGB', (w + 2, h + 4), _render.BACKGROUND)
            ImageDraw.Draw(tile).text((0, 0), label, fill=_render.TEXT, font=small)
            tile = tile.rotate(90, expand=True)
            img.paste(tile, (x0 + i * cell + (cell - tile.width) // 2, y0 - 4 - tile.height))
    for n, (a, b, _, _) in enumerate(top_pairs, start=1):
        cx, cy = x0 + pos[b] * cell + cell / 2, y0 + pos[a] * cell + cell / 2
        r = max(5.0, 0.7 * cell)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(220, 30, 30), width=2)
        draw.text((cx + r + 1, cy - r - 1), str(n), fill=(220, 30, 30), font=small, anchor='lb')
    lx = x0 + k * cell + margin
    for i, line in enumerate(legend_lines):
        draw.text((lx, y0 + i * line_h), _render.fit_text(line, legend_w, small), fill=_render.TEXT, font=small)
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
    return dict(per_class=per_class_path, pairs=pairs_path, png=png_path, top1=top1, top5=top5,
                mean_class_accuracy=mean_class, videos=len(preds.labels), pair_rows=pairs[:top], names=names,
                worst=[(c, acc['top1'][c], int(acc['videos'][c])) for c in ranked[:top]])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('output', help='evaluation output folder (holds predictions.csv) or the csv file')
    parser.add_argument('--labels', default=None, help="class-name list ('id,name' csv); default: names "
                                                       "stored in predictions.csv")
    parser.add_argument('--top', type=int, default=20, help='confused pairs to print and label (default 20)')
    parser.add_argument('--order', default='cluster', choices=('cluster', 'accuracy', 'id'),
                        help='class order of the confusion matrix (default cluster)')
    parser.add_argument('--out', default=None, help='folder for the report files (default: next to the csv)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')

    csv_path = args.output
    if os.path.isdir(csv_path):
        csv_path = os.path.join(csv_path, PREDICTIONS_FILE)
    out_dir = args.out or os.path.dirname(os.path.abspath(csv_path))
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
