"""``--shard i/n``: parsing, assignment by key (stable, balanced) and blocks of whole batches."""

from __future__ import annotations

import pytest

from radlens.common.sharding import Shard, shard_of
from radlens.errors import ConfigError


def test_parse() -> None:
    assert Shard.parse("1/4") == Shard(1, 4) and Shard.parse(" 0 / 1 ") == Shard(0, 1) and Shard.parse(None) is None
    assert str(Shard(3, 8)) == "3/8" and Shard(3, 8).tag == "shard-00003-of-00008"
    for bad in ("4/4", "1", "-1/2", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="i/n"):
            Shard.parse(bad)


def test_every_key_has_exactly_one_shard_and_they_are_balanced() -> None:
    keys = [f"patient-{i}" for i in range(4000)]
    counts = [sum(Shard(i, 4).owns(k) for k in keys) for i in range(4)]
    assert sum(counts) == len(keys) and min(counts) > 900
    assert shard_of("patient-7", 4) == shard_of("patient-7", 4)  # no state, no order


def test_blocks_of_whole_batches_cover_the_table() -> None:
    rows = [list(range(30))[Shard(i, 3).batch_rows(30, 8)] for i in range(3)]
    assert rows == [list(range(0, 8)), list(range(8, 16)), list(range(16, 30))]
    assert [Shard(i, 5).batch_rows(3, 8) for i in range(5)][:4] == [slice(0, 0)] * 4  # more shards than batches
    assert sum((list(range(3))[Shard(i, 5).batch_rows(3, 8)] for i in range(5)), []) == [0, 1, 2]
