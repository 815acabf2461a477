"""Config dataclasses back from their strict-JSON form (as a shard's shard.json records them)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from radlens.common.atomic import strict_json
from radlens.common.configs import from_json_dict
from radlens.errors import ConfigError
from radlens.prepare.pipeline import PrepareConfig, default_config


@pytest.mark.parametrize("source", ["bids", "ct-rate", "m3d"])
def test_prepare_configs_round_trip_through_json(source: str) -> None:
    cfg = default_config(source)
    data = json.loads(json.dumps(strict_json(cfg.to_dict())))  # tuples -> lists, inf -> "inf"
    back = from_json_dict(PrepareConfig, data)
    assert back == cfg and json.dumps(strict_json(back.to_dict())) == json.dumps(strict_json(cfg.to_dict()))


def test_unknown_keys_are_refused() -> None:
    data = dataclasses.asdict(PrepareConfig())
    data["spatial"]["nope"] = 1
    with pytest.raises(ConfigError, match=r"unknown SpatialConfig key\(s\) \['nope'\]"):
        from_json_dict(PrepareConfig, data)
