"""The toy dataset: decodable H.264 files, well-formed CSVs, three disjoint balanced splits, determinism, and
classes that need frame order."""
import csv
import hashlib
import json
import os
from collections import Counter

import av
import numpy as np
import pytest

from datasets.toy import (CLASS_NAMES, ensure_toy_dataset, generate_toy_dataset, render_clip, reverse_params,
                          sample_clip_params)

SMALL = dict(num_train=16, num_val=8, num_test=12, seed=3, num_frames=16, size=48)
SPLIT_SIZES = (('train', 16), ('val', 8), ('test', 12))


def _decode(path, format='rgb24'):
    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format=format) for frame in container.decode(video=0)])


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.reader(f))


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    return generate_toy_dataset(str(tmp_path_factory.mktemp('toy') / 'a'), workers=2, **SMALL)


def test_reversal_pairs_render_exactly_reversed():
    for label in range(0, len(CLASS_NAMES), 2):
        params = sample_clip_params(np.random.default_rng(label), label, num_frames=12, size=32)
        reversed_params = reverse_params(params)
        assert (params.label, reversed_params.label) == (label, label + 1)
        assert np.array_equal(render_clip(reversed_params), render_clip(params)[::-1])
        assert reverse_params(reversed_params) == params
        # The odd class is generated exactly as the reversal of the even class's draw.
        odd = sample_clip_params(np.random.default_rng(label), label + 1, num_frames=12, size=32)
        assert odd == reversed_params
        # And the clip really changes over time (it is not a static picture).
        frames = render_clip(params).astype(np.int16)
        assert np.abs(frames[-1] - frames[0]).max() > 100


def test_files_decode_and_csvs_are_well_formed(toy_root):
    assert _read_csv(os.path.join(toy_root, 'labels.csv')) == \
        [['id', 'name']] + [[str(i), name] for i, name in enumerate(CLASS_NAMES)]
    for split, count in SPLIT_SIZES:
        rows = _read_csv(os.path.join(toy_root, f'{split}.csv'))
        assert len(rows) == count and all(len(row) == 2 for row in rows)
        labels = Counter(int(label) for _, label in rows)
        assert set(labels) <= set(range(len(CLASS_NAMES))) and max(labels.values()) - min(labels.values()) <= 1
        for rel_path, label in rows:
            assert not os.path.isabs(rel_path) and rel_path.startswith(f'{split}/')
            assert CLASS_NAMES[int(label)].replace(' ', '_') in rel_path
        frames = _decode(os.path.join(toy_root, rows[0][0]))
        assert frames.shape == (SMALL['num_frames'], SMALL['size'], SMALL['size'], 3)
        with av.open(os.path.join(toy_root, rows[0][0])) as container:
            assert container.streams.video[0].codec_context.name == 'h264'
    assert not [name for name in os.listdir(os.path.dirname(toy_root)) if '.tmp-' in name]


def test_encoding_preserves_the_rendered_clip(toy_root):
    """Decoded frames are close to the renderer's output, so the motion survives compression."""
    rel_path, label = _read_csv(os.path.join(toy_root, 'train.csv'))[0]
    rng = np.random.default_rng([SMALL['seed'], 0, 0, 0])  # the generator's seed of train clip 0
    rendered = render_clip(sample_clip_params(rng, int(label), SMALL['num_frames'], SMALL['size']))
    decoded = _decode(os.path.join(toy_root, rel_path))
    assert np.abs(decoded.astype(np.int16) - rendered).mean() < 6.0


def test_deterministic_for_a_seed(toy_root, tmp_path):
    # One worker instead of two: the output must not depend on how the clips are spread over processes.
    again = generate_toy_dataset(str(tmp_path / 'b'), workers=1, **SMALL)
    for name in ('train.csv', 'val.csv', 'test.csv', 'labels.csv'):
        assert _read_csv(os.path.join(toy_root, name)) == _read_csv(os.path.join(again, name))
    for rel_path, _ in _read_csv(os.path.join(toy_root, 'val.csv')) + _read_csv(os.path.join(toy_root, 'test.csv')):
        # Compare the decoded YUV planes themselves (no colour conversion involved).
        first, second = (_decode(os.path.join(root, rel_path), format='yuv420p') for root in (toy_root, again))
        assert np.array_equal(first, second)
    other = sample_clip_params(np.random.default_rng([4, 0, 0, 0]), 0, 16, 48)
    assert other != sample_clip_params(np.random.default_rng([3, 0, 0, 0]), 0, 16, 48)


def test_splits_are_disjoint_and_keep_their_streams(toy_root, tmp_path):
    """No clip is in two splits; adding the test split left the train and val clips as they were."""
    digests = {}
    for split, _ in SPLIT_SIZES:
        for rel_path, _ in _read_csv(os.path.join(toy_root, f'{split}.csv')):
            with open(os.path.join(toy_root, rel_path), 'rb') as f:
                digests.setdefault(hashlib.sha256(f.read()).hexdigest(), []).append(rel_path)
    assert len(digests) == sum(count for _, count in SPLIT_SIZES), [p for p in digests.values() if len(p) > 1]
    # Each split's clips come from its own seeds: (seed, split number, 0, index); val and test clip 0 differ.
    val_0, test_0 = (sample_clip_params(np.random.default_rng([SMALL['seed'], number, 0, 0]), 0, 16, 48)
                     for number in (1, 2))
    assert val_0 != test_0
    # Another test-split size changes neither train nor val.
    other = generate_toy_dataset(str(tmp_path / 'c'), workers=2, **dict(SMALL, num_test=3))
    for name in ('train.csv', 'val.csv'):
        assert _read_csv(os.path.join(toy_root, name)) == _read_csv(os.path.join(other, name))
    assert len(_read_csv(os.path.join(other, 'test.csv'))) == 3
    rel_path = _read_csv(os.path.join(toy_root, 'val.csv'))[0][0]
    assert np.array_equal(*(_decode(os.path.join(root, rel_path), 'yuv420p') for root in (toy_root, other)))
    with open(os.path.join(toy_root, 'toy_meta.json')) as f:
        meta = json.load(f)
    assert (meta['num_train'], meta['num_val'], meta['num_test']) == (16, 8, 12)


def test_test_split_defaults_to_the_validation_size(tmp_path):
    root = generate_toy_dataset(str(tmp_path / 'd'), num_train=2, num_val=3, num_frames=2, size=16, workers=1)
    assert len(_read_csv(os.path.join(root, 'test.csv'))) == 3
    with pytest.raises(ValueError, match="'test': 0"):
        generate_toy_dataset(str(tmp_path / 'e'), num_train=2, num_val=3, num_test=0)


def _pooled(clip, block=2):
    """Frames summed over channels and ``block`` x ``block`` cells: int64 (T, S/b, S/b), exact."""
    t, s = clip.shape[:2]
    return clip.astype(np.int64).reshape(t, s // block, block, s // block, block, 3).sum((2, 4, 5))


def _weighted_centre(weights, grid):
    return (weights * grid).sum() / (weights.sum() + 1e-9)


def _order_blind(clip):
    """Where and how much the clip changes, from the temporal variance map (a frame-order-free statistic).

    Features: horizontal and vertical spread of the variance and its log total. Computed with exact
    integers up to the variance map, so twins that differ only in frame order give identical values.
    """
    pooled = _pooled(clip)
    variance = (len(pooled) * (pooled ** 2).sum(0) - pooled.sum(0) ** 2).astype(np.float64)
    variance = np.maximum(variance - np.median(variance), 0.0)  # remove the noise floor
    ys, xs = np.mgrid[0:variance.shape[0], 0:variance.shape[1]]
    mx, my = _weighted_centre(variance, xs), _weighted_centre(variance, ys)
    return np.array([np.sqrt(_weighted_centre(variance, (xs - mx) ** 2)),
                     np.sqrt(_weighted_centre(variance, (ys - my) ** 2)), np.log(variance.sum() + 1.0)])


def _order_aware(clip):
    """The same kind of statistic on the temporal slope: where the clip gains vs loses brightness."""
    pooled = _pooled(clip).astype(np.float64)
    slope = np.tensordot(np.arange(len(pooled)) - (len(pooled) - 1) / 2, pooled, axes=1)
    gain, loss = np.maximum(slope, 0), np.maximum(-slope, 0)
    ys, xs = np.mgrid[0:slope.shape[0], 0:slope.shape[1]]
    return np.array([_weighted_centre(gain, xs) - _weighted_centre(loss, xs),
                     _weighted_centre(gain, ys) - _weighted_centre(loss, ys),
                     slope.sum() / (np.abs(slope).sum() + 1e-9)])


def _nearest_centroid(feature, train, test, groups, candidates):
    """Accuracy of a nearest-centroid classifier on standardised features.

    ``groups(label)`` maps labels to the classes being predicted; ``candidates(label)`` restricts the
    decision (e.g. to the two classes of a reversal pair).
    """
    train_x = np.array([feature(clip) for clip, _ in train])
    mean, std = train_x.mean(0), train_x.std(0) + 1e-9
    train_x = (train_x - mean) / std
    train_y = np.array([groups(label) for _, label in train])
    centroids = {g: train_x[train_y == g].mean(0) for g in set(train_y.tolist())}
    correct = []
    for clip, label in test:
        x = (feature(clip) - mean) / std
        options = candidates(label)
        pred = options[int(np.argmin([np.linalg.norm(x - centroids[g]) for g in options]))]
        correct.append(pred == groups(label))
    return float(np.mean(correct))


def test_frame_order_blind_classifier_is_at_chance_within_pairs():
    rng = np.random.default_rng(0)
    frames, size = 12, 32
    train = [(render_clip(p), p.label) for p in
             (sample_clip_params(rng, label, frames, size) for label in list(range(8)) * 12)]
    # Test set of reversal twins: a clip of class 2j and its time reversal (a valid clip of class 2j+1).
    test = []
    for label in list(range(0, 8, 2)) * 8:
        params = sample_clip_params(rng, label, frames, size)
        test += [(render_clip(params), label), (render_clip(reverse_params(params)), label + 1)]

    def within_pair(feature):
        return _nearest_centroid(feature, train, test, groups=lambda label: label,
                                 candidates=lambda label: (label - label % 2, label - label % 2 + 1))

    # An order-blind statistic is identical for the two twins, so it is right on exactly one of each.
    assert within_pair(_order_blind) == 0.5
    # It does tell the kind of change (4 kinds, chance 0.25), just not its direction ...
    assert _nearest_centroid(_order_blind, train, test, groups=lambda label: label // 2,
                             candidates=lambda label: (0, 1, 2, 3)) >= 0.8
    # ... which a statistic of the frame order gives.
    assert within_pair(_order_aware) >= 0.95


def test_ensure_toy_dataset_generates_once(tmp_path):
    root = str(tmp_path / 'toy')
    assert ensure_toy_dataset(root, num_train=8, num_val=8, num_frames=4, size=16, workers=1) == root
    stamp = os.path.getmtime(os.path.join(root, 'train.csv'))
    ensure_toy_dataset(root, num_train=8, num_val=8, num_frames=4, size=16, workers=1)
    assert os.path.getmtime(os.path.join(root, 'train.csv')) == stamp
    assert len(_read_csv(os.path.join(root, 'val.csv'))) == 8
    assert len(_read_csv(os.path.join(root, 'test.csv'))) == 8  # as many as val by default
    os.makedirs(tmp_path / 'busy')
    (tmp_path / 'busy' / 'notes.txt').write_text('not a dataset')
    with pytest.raises(FileExistsError, match='lacks train.csv/val.csv/test.csv/labels.csv'):
        ensure_toy_dataset(str(tmp_path / 'busy'))
    # a folder made before the test split existed: named, not silently completed
    os.remove(os.path.join(root, 'test.csv'))
    with pytest.raises(FileExistsError, match='lacks test.csv;'):
        ensure_toy_dataset(root, num_train=8, num_val=8, num_frames=4, size=16, workers=1)
    with pytest.raises(ValueError, match='even'):
        generate_toy_dataset(str(tmp_path / 'odd'), size=47)


def test_cli_prints_a_command_that_uses_what_it_wrote(tmp_path, capsys, monkeypatch):
    """The printed main.py command names DATA.ROOT and every list the generator wrote (DATA.ROOT alone left
    TRAIN/VAL/TEST_FILE and LABEL_LIST at data/toy), and it passes main.py's start-up checks from any folder."""
    import shlex

    import main
    from datasets.toy import main as toy_main
    from engine.config import get_config
    from engine.preflight import run_file_problems
    out = tmp_path / 'my toy'  # a space: the command is shell-quoted
    toy_main(['--out', str(out), '--num-train', '2', '--num-val', '1', '--frames', '2', '--size', '16',
              '--workers', '1'])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    argv = shlex.split(printed)
    assert argv[:3] == ['python', 'main.py', '--cfg']
    monkeypatch.chdir(tmp_path)  # not the repository: every path of the command must still resolve
    config = get_config(main.parse_args(argv[2:] + ['--pretrained', '']))
    assert config.DATA.ROOT == str(out)
    for key, name in (('TRAIN_FILE', 'train.csv'), ('VAL_FILE', 'val.csv'), ('TEST_FILE', 'test.csv'),
                      ('LABEL_LIST', 'labels.csv')):
        assert config.DATA[key] == str(out / name) and os.path.isfile(config.DATA[key])
    assert run_file_problems(config) == []
