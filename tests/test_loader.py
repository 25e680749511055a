"""The resumable sampler: sharding, per-epoch shuffles, mid-epoch skipping, and per-sample seeds."""
from __future__ import annotations

import torch

from hiera_video.data.loader import ResumableSampler, collate_samples


def keys(sampler):
    return list(sampler)


def test_ranks_partition_the_epoch_and_differ_in_seeds():
    samplers = [ResumableSampler(10, rank, 2, shuffle=True, seed=3) for rank in range(2)]
    rank0, rank1 = keys(samplers[0]), keys(samplers[1])
    assert len(rank0) == len(rank1) == 5
    assert sorted(k.index for k in rank0 + rank1) == list(range(10))
    assert not {k.seed for k in rank0} & {k.seed for k in rank1}


def test_epochs_reshuffle_reproducibly():
    a, b = ResumableSampler(20, 0, 1, True, seed=1), ResumableSampler(20, 0, 1, True, seed=1)
    a.set_epoch(1), b.set_epoch(1)
    assert keys(a) == keys(b)
    b.set_epoch(2)
    assert [k.index for k in keys(a)] != [k.index for k in keys(b)]


def test_mid_epoch_start_replays_the_rest_exactly():
    full = ResumableSampler(17, 1, 3, True, seed=5)
    full.set_epoch(4)
    resumed = ResumableSampler(17, 1, 3, True, seed=5)
    resumed.set_epoch(4, start_sample=2)
    assert keys(resumed) == keys(full)[2:]
    assert len(resumed) == len(full) - 2


def test_padding_only_when_asked():
    padded = [keys(ResumableSampler(5, r, 2, False, 0)) for r in range(2)]
    assert [len(p) for p in padded] == [3, 3]
    unpadded = [keys(ResumableSampler(5, r, 2, False, 0, pad=False)) for r in range(2)]
    assert sorted(k.index for p in unpadded for k in p) == list(range(5))


def test_collate_repeats_per_sample_values_per_clip():
    samples = [
        {"video": torch.zeros(2, 3, 4, 8, 8), "view": torch.arange(2), "label": 1, "index": 0, "bad_files": []},
        {"video": torch.ones(3, 3, 4, 8, 8), "view": torch.arange(3), "label": 2, "index": 5,
         "bad_files": ["x.mp4: broken"]},
    ]
    batch = collate_samples(samples)
    assert batch["video"].shape == (5, 3, 4, 8, 8)
    assert batch["label"].tolist() == [1, 1, 2, 2, 2]
    assert batch["index"].tolist() == [0, 0, 5, 5, 5]
    assert batch["view"].tolist() == [0, 1, 0, 1, 2]
    assert batch["bad_files"] == ["x.mp4: broken"]
