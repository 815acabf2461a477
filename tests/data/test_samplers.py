"""Seeded, rank-aware, resumable batch sampler."""

from __future__ import annotations

import numpy as np
import pytest

from radlens.data.samplers import ClipBatchSampler
from radlens.errors import ConfigError


def _indices(sampler: ClipBatchSampler) -> list[list[int]]:
    return [[i for i, _ in batch] for batch in sampler]


def test_order_depends_only_on_seed_and_epoch() -> None:
    a, b = ClipBatchSampler(20, 4, seed=1), ClipBatchSampler(20, 4, seed=1)
    assert len(a) == 5 and _indices(a) == _indices(b)
    a.set_epoch(1)
    assert _indices(a) != _indices(b)
    assert all(epoch == 1 for batch in a for _, epoch in batch)


def test_ranks_split_each_global_batch() -> None:
    ranks = [ClipBatchSampler(16, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    r0, r1 = _indices(ranks[0]), _indices(ranks[1])
    assert len(r0) == len(r1) == 2
    assert sorted(sum(r0 + r1, [])) == list(range(16))


def test_distinct_groups_never_share_a_batch() -> None:
    groups = np.repeat(np.arange(10), 4)  # 10 series x 4 slices
    sampler = ClipBatchSampler(40, 8, seed=0, groups=groups)
    batches = _indices(sampler)
    assert len(batches) == len(sampler) == 5
    assert all(len(set(groups[b])) == len(b) == 8 for b in batches)
    with pytest.raises(ConfigError, match="distinct groups"):
        ClipBatchSampler(40, 16, groups=groups)


def test_resume_skips_the_batches_already_trained() -> None:
    full = ClipBatchSampler(24, 4, seed=2)
    full.set_epoch(3)
    expected = _indices(full)
    resumed = ClipBatchSampler(24, 4, seed=2)
    resumed.resume(3, 2)
    assert _indices(resumed) == expected[2:]
    assert len(_indices(resumed)) == 6  # the skip applies once
    finished = ClipBatchSampler(24, 4, seed=2)
    finished.resume(3, 6)
    assert finished.epoch == 4


def test_lightning_sets_the_epoch_of_a_resumable_loader() -> None:
    """Lightning calls set_epoch on ``loader.batch_sampler.sampler``: each epoch gets its own order."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from radlens.data.samplers import ClipBatchSampler, resumable_loader

    class Keys:  # a dataset that returns its (index, epoch) keys
        def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
            return key

        def __len__(self) -> int:
            return 12

    sampler = ClipBatchSampler(12, 4, seed=0)
    loader = resumable_loader(Keys(), sampler, lambda: 0, collate_fn=lambda keys: keys)
    first = list(loader)
    _set_sampler_epoch(loader, 1)
    second = list(loader)
    assert {e for batch in second for _, e in batch} == {1} and first != second
    assert loader.state_dict()["epoch"] == 1
