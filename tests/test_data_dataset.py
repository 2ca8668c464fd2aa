"""VideoDataset and loaders: view layout, one decode per item, determinism, unreadable videos, sharding."""
import logging

import numpy as np
import pytest
import torch

from datasets import video_dataset
from datasets.loader import build_dataset, build_eval_loader, build_train_loader
from datasets.sampling import FrameSampler
from datasets.transforms import EvalTransform, TrainTransform
from datasets.video_dataset import EvalCollate, UnreadableVideosError, VideoDataset
from video_helpers import NUM_GOOD, make_config


class FakeVideo:
    """Exact synthetic frames: R = 3 x column, G = frame index; counts opens and decodes."""

    opens = decodes = 0

    def __init__(self, num_frames=50, height=32, width=64):
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, 30.0
        xs = np.arange(width, dtype=np.uint8) * 3
        self.frames = np.zeros((num_frames, height, width, 3), np.uint8)
        self.frames[..., 0] = xs
        self.frames[..., 1] = np.arange(num_frames, dtype=np.uint8)[:, None, None]
        FakeVideo.opens += 1

    def get_frames(self, indices):
        FakeVideo.decodes += 1
        return self.frames[np.asarray(indices)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.fixture
def fake_videos(monkeypatch):
    FakeVideo.opens = FakeVideo.decodes = 0
    monkeypatch.setattr(video_dataset, 'open_video', lambda path, backend='auto': FakeVideo())
    return FakeVideo


def test_eval_views_are_crop_major_then_clip(fake_videos):
    sampler = FrameSampler(num_frames=8, interval=4)
    dataset = VideoDataset([('a.mp4', 1), ('b.mp4', 2)], 'eval', sampler, EvalTransform(32, num_crop=3), num_clip=4)
    item = dataset[1]
    assert (fake_videos.opens, fake_videos.decodes) == (1, 1)      # all 12 views from one decode
    imgs = item['imgs']
    assert imgs.shape == (12, 8, 3, 32, 32) and item['index'] == 1 and item['label'] == 2
    clips = sampler.test(50, 4)
    for crop, left in enumerate((0, 32, 16)):                          # 32x64: three crops, original order
        for clip in range(4):
            view = imgs[crop * 4 + clip]
            assert (view[:, 0, 0, 0] == 3 * left).all()
            assert view[:, 1, 0, 0].tolist() == clips[clip].tolist()
    again = dataset[1]['imgs']
    assert torch.equal(imgs, again)                                    # deterministic


def test_train_item_one_decode_many_views(fake_videos):
    sampler = FrameSampler(num_frames=8, interval=4)
    transform = TrainTransform(16, flip_ratio=0.5, color_jitter=0.0, gray_scale=0.0, reprob=0.5, recount=2)
    dataset = VideoDataset([('a.mp4', 0)] * 5, 'train', sampler, transform, repeated_aug=3, seed=1)
    item = dataset[(2, 4)]
    assert (fake_videos.opens, fake_videos.decodes) == (1, 1)
    assert item['imgs'].shape == (3, 8, 3, 16, 16) and item['erase_boxes'].shape == (3, 2, 4)
    assert item['num_unreadable'] == 0 and item['index'] == 4
    views = item['imgs']
    assert not torch.equal(views[0], views[1])                        # each view its own frames and crop
    for view in views:                                                 # frames in order within each view
        assert (view[:, 1].float().mean(dim=(1, 2)).diff() > 0).all()
    same = dataset[(2, 4)]
    assert torch.equal(views, same['imgs']) and (same['erase_boxes'] == item['erase_boxes']).all()
    assert not torch.equal(views, dataset[(3, 4)]['imgs'])             # another epoch, other draws
    dataset.set_epoch(2)
    assert torch.equal(views, dataset[4]['imgs'])                      # integer keys use the dataset epoch


def test_train_batches_do_not_depend_on_world_size(video_dir, tmp_path):
    root, good, _ = video_dir
    rows = good + good[:1]                                             # 8 samples: 2 global batches of 4
    one = make_config(root, rows, tmp_path, **{'DATA.BATCH_SIZE': 4})
    two = make_config(root, rows, tmp_path, **{'DATA.BATCH_SIZE': 2})
    _, sampler, loader = build_train_loader(one, 0, 1)
    sampler.set_epoch(1)
    reference = list(loader)
    ranks = []
    for rank in range(2):
        _, sampler, loader = build_train_loader(two, rank, 2)
        sampler.set_epoch(1)
        ranks.append(list(loader))
    assert len(reference) == 2
    for step, batch in enumerate(reference):
        merged_index = torch.cat([ranks[0][step]['index'], ranks[1][step]['index']])
        merged_imgs = torch.cat([ranks[0][step]['imgs'], ranks[1][step]['imgs']])
        assert merged_index.tolist() == batch['index'].tolist()
        assert torch.equal(merged_imgs, batch['imgs'])
        assert batch['imgs'].shape == (4, 4, 3, 16, 16) and batch['imgs'].dtype == torch.uint8
        assert batch['label'].tolist() == [rows[i][1] for i in batch['index'].tolist()]
        assert batch['num_unreadable'].item() == 0 and 'erase_boxes' not in batch


@pytest.mark.slow
def test_worker_processes_and_epochs_give_the_same_batches(video_dir, tmp_path):
    root, good, _ = video_dir
    batches = {}
    for workers in (0, 2):
        config = make_config(root, good + good[:1], tmp_path, **{'DATA.NUM_WORKERS': workers, 'AUG.REPEATED_AUG': 2,
                                                                 'AUG.REPROB': 0.5})
        _, sampler, loader = build_train_loader(config, 0, 1)
        assert loader.persistent_workers == (workers > 0)
        for epoch in (0, 1):                                       # persistent workers must follow set_epoch
            sampler.set_epoch(epoch)
            batches[workers, epoch] = list(loader)
    for epoch in (0, 1):
        for a, b in zip(batches[0, epoch], batches[2, epoch]):
            assert a['imgs'].shape[0] == 4 and torch.equal(a['imgs'], b['imgs'])
            assert torch.equal(a['index'], b['index']) and torch.equal(a['erase_boxes'], b['erase_boxes'])
    assert not torch.equal(batches[0, 0][0]['imgs'], batches[0, 1][0]['imgs'])


@pytest.mark.parametrize('world_size', [1, 2, 3])
def test_eval_loader_gives_every_video_to_exactly_one_rank(video_dir, tmp_path, world_size):
    root, good, bad = video_dir
    rows = good[:6] + [(bad['missing'], 0)]                             # 7 videos: divisible by neither 2 nor 3
    config = make_config(root, rows, tmp_path)
    seen, unreadable = [], []
    for rank in range(world_size):
        dataset, loader = build_eval_loader(config, rank, world_size, num_clip=2, num_crop=3)
        for batch in loader:
            assert batch['imgs'].shape[1:] == (6, 4, 3, 16, 16)
            assert batch['imgs'].shape[0] == len(batch['index']) == len(batch['label'])
            seen += batch['index'].tolist()
            unreadable += [index for index, _, _ in batch['unreadable']]
    assert sorted(seen + unreadable) == list(range(len(rows)))
    assert unreadable == [6]


def test_train_replaces_unreadable_videos_counts_and_logs_once(video_dir, tmp_path, caplog):
    root, good, bad = video_dir
    rows = good + [(name, 1) for name in bad.values()]
    config = make_config(root, rows, tmp_path, **{'DATA.MAX_UNREADABLE_FRACTION': 0.9})
    dataset = build_dataset(config, 'train')
    bad_indices = range(NUM_GOOD, len(rows))
    with caplog.at_level(logging.WARNING, logger='datasets.video_dataset'):
        for epoch in (0, 1):
            for index in bad_indices:
                item = dataset[(epoch, index)]
                assert item['num_unreadable'] >= 1
                assert item['index'] < NUM_GOOD                        # a readable replacement...
                assert item['label'] == rows[item['index']][1]         # ...with its own label
                assert item['imgs'].shape == (1, 4, 3, 16, 16)
    assert dataset.num_unreadable == len(bad)
    logged = [r.getMessage() for r in caplog.records if 'unreadable video' in r.getMessage()]
    assert len(logged) == len(bad)                                     # once per video, with the reason
    assert any('header claims' in m for m in logged) and any('file not found' in m for m in logged)
    # deterministic replacement
    assert dataset[(0, NUM_GOOD)]['index'] == dataset[(0, NUM_GOOD)]['index']


def test_train_stops_when_too_many_videos_are_unreadable(video_dir, tmp_path):
    root, good, bad = video_dir
    rows = good + [(name, 1) for name in bad.values()]                  # 6 of 13 unreadable
    dataset = build_dataset(make_config(root, rows, tmp_path, **{'DATA.MAX_UNREADABLE_FRACTION': 0.3}), 'train')
    with pytest.raises(UnreadableVideosError, match=r'of 13 training videos are unreadable.*datasets.check'):
        for index in range(NUM_GOOD, len(rows)):
            dataset[(0, index)]
    assert dataset.num_unreadable == 4                                  # 4 > 0.3 x 13
    only_bad = build_dataset(make_config(root, [(bad['missing'], 0), (bad['empty'], 1)], tmp_path,
                                         **{'DATA.MAX_UNREADABLE_FRACTION': 1.0}), 'train')
    with pytest.raises(UnreadableVideosError, match='in a row'):
        only_bad[(0, 0)]


def test_eval_reports_unreadable_videos_and_never_substitutes(video_dir, tmp_path):
    root, good, bad = video_dir
    rows = good[:2] + [(name, 2) for name in bad.values()]
    config = make_config(root, rows, tmp_path, **{'TEST.BATCH_SIZE': 3})
    dataset, loader = build_eval_loader(config)
    batches = list(loader)
    assert [b['index'].tolist() for b in batches] == [[0, 1], [], []]
    reported = {index: (path, reason) for b in batches for index, path, reason in b['unreadable']}
    assert sorted(reported) == list(range(2, len(rows)))
    assert reported[2 + list(bad).index('missing')][1] == 'file not found'
    assert all(path.startswith(str(root)) and reason for path, reason in reported.values())
    assert batches[1]['imgs'].shape == (0, 1, 4, 3, 16, 16)
    strict = make_config(root, rows, tmp_path, **{'TEST.ON_UNREADABLE': 'error'})
    dataset, _ = build_eval_loader(strict)
    with pytest.raises(UnreadableVideosError, match=r"TEST.ON_UNREADABLE is 'error'"):
        dataset[2]


def test_eval_collate_with_no_readable_video():
    batch = EvalCollate((2, 4, 3, 8, 8))([dict(unreadable=(3, 'x.mp4', 'file not found'), label=0, index=3)])
    assert batch['imgs'].shape == (0, 2, 4, 3, 8, 8) and batch['label'].numel() == 0
    assert batch['unreadable'] == [(3, 'x.mp4', 'file not found')]
