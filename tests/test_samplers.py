"""Distributed train/eval samplers: world-size-independent global batches, exact eval sharding."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.samplers import DistributedEvalSampler, DistributedTrainSampler, epoch_seed, seed_worker


def _steps(num_samples, per_rank_batch, world_size, epoch, seed=0, drop_last=True):
    """Per step, the list of per-rank batches (as lists of indices)."""
    per_rank = []
    for rank in range(world_size):
        sampler = DistributedTrainSampler(num_samples, per_rank_batch, rank, world_size, seed=seed,
                                          drop_last=drop_last)
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler)
        per_rank.append([indices[i:i + per_rank_batch] for i in range(0, len(indices), per_rank_batch)])
    assert len({len(batches) for batches in per_rank}) == 1, 'ranks must run the same number of steps'
    return [[per_rank[r][g] for r in range(world_size)] for g in range(len(per_rank[0]))]


@pytest.mark.parametrize('num_samples', [37, 48])
def test_global_batches_do_not_depend_on_world_size(num_samples):
    global_batch = 8
    for epoch in (0, 3):
        single = _steps(num_samples, global_batch, 1, epoch)
        assert len(single) == num_samples // global_batch
        for world_size in (2, 4):
            multi = _steps(num_samples, global_batch // world_size, world_size, epoch)
            assert len(multi) == len(single)
            for (whole,), parts in zip(single, multi):
                assert sorted(sum(parts, [])) == sorted(whole)
                # Concatenating the ranks' batches in rank order gives the single process's batch.
                assert sum(parts, []) == whole


def test_train_sampler_layout_and_epochs():
    sampler = DistributedTrainSampler(20, 3, rank=1, world_size=2, seed=5)
    sampler.set_epoch(0)
    order = torch.randperm(20, generator=torch.Generator().manual_seed(epoch_seed(5, 0))).tolist()
    # 3 full global batches of 6; rank 1 takes positions 3..5 of each.
    assert list(sampler) == order[3:6] + order[9:12] + order[15:18]
    assert len(sampler) == 9
    first = list(sampler)
    assert list(sampler) == first, 'same epoch, same order'
    sampler.set_epoch(1)
    assert list(sampler) != first, 'reshuffled each epoch'
    # Within an epoch no index repeats across ranks, and only the incomplete tail (20 - 18) is dropped.
    both = []
    for rank in range(2):
        s = DistributedTrainSampler(20, 3, rank=rank, world_size=2, seed=5)
        s.set_epoch(4)
        both += list(s)
    assert len(both) == len(set(both)) == 18
    assert epoch_seed(0, 1) != epoch_seed(1, 0)


def test_train_sampler_no_shuffle_and_keep_tail():
    sampler = DistributedTrainSampler(10, 3, rank=0, world_size=1, shuffle=False)
    assert list(sampler) == list(range(9))
    # drop_last=False: the tail (indices 8, 9, 10 of 11) is spread over 2 ranks, padded from the start.
    ranks = [list(DistributedTrainSampler(11, 2, r, 2, shuffle=False, drop_last=False)) for r in range(2)]
    assert ranks[0] == [0, 1, 4, 5, 8, 9]
    assert ranks[1] == [2, 3, 6, 7, 10, 0]
    assert all(len(DistributedTrainSampler(11, 2, r, 2, drop_last=False)) == 6 for r in range(2))
    # Fewer samples than one global batch: padding repeats the order as often as needed.
    tiny = [list(DistributedTrainSampler(1, 1, r, 4, drop_last=False)) for r in range(4)]
    assert tiny == [[0], [0], [0], [0]]
    assert list(DistributedTrainSampler(3, 4, 0, 1)) == []


@pytest.mark.parametrize('num_samples', [10, 7, 0, 1])
@pytest.mark.parametrize('world_size', [1, 2, 3])
def test_eval_sampler_each_index_exactly_once(num_samples, world_size):
    shards = [list(DistributedEvalSampler(num_samples, r, world_size)) for r in range(world_size)]
    assert sorted(sum(shards, [])) == list(range(num_samples))
    assert [len(DistributedEvalSampler(num_samples, r, world_size)) for r in range(world_size)] == \
        [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_invalid_arguments():
    with pytest.raises(ValueError, match='rank'):
        DistributedTrainSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match='batch_size'):
        DistributedTrainSampler(10, 0)
    with pytest.raises(ValueError, match='world_size'):
        DistributedEvalSampler(10, 0, 0)


class _RandomDraws(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.tensor([np.random.randint(1 << 30), random.randint(0, 1 << 30)])


def test_seed_worker_gives_workers_distinct_reproducible_streams():
    def draws(seed):
        loader = DataLoader(_RandomDraws(), batch_size=1, num_workers=2, worker_init_fn=seed_worker,
                            generator=torch.Generator().manual_seed(seed))
        return torch.cat(list(loader)).tolist()

    first = draws(0)
    assert first == draws(0)
    # Workers 0 and 1 serve samples 0/2 and 1/3: their first draws must differ.
    assert first[0] != first[1]
    assert first != draws(1)
