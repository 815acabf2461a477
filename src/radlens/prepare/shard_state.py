"""``shard.json``: what one shard of a ``radlens prepare --shard i/n`` job did, and what every shard shares.

Written last by :func:`radlens.prepare.pipeline.prepare_shard` (its presence marks a complete
shard) and read by :func:`radlens.prepare.shards.merge_shards`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from radlens.common.atomic import write_json_atomic
from radlens.errors import InputError
from radlens.prepare.dataset import CARD, config_hash

STATE = "shard.json"
FORMAT, FORMAT_VERSION = "radlens-prepare-shard", 1


@dataclass
class ShardState:
    """``shard.json``: one shard's part of a job and what every shard of the job shares.

    ``items`` are ``[series_id, fingerprint]`` of every series discovered, in discovery order (the
    order of the merged tables); ``series`` the ids this shard prepared; ``failures`` this shard's
    failed series (``series_id`` added to each :class:`Failure`).
    """

    index: int
    count: int
    source: str
    root: str
    config: dict[str, Any]
    items: list[list[str]]
    series: list[str]
    discovery_failures: list[dict[str, str]]
    failures: list[dict[str, str]]
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    protocol_labels: bool = False
    phi_key_fingerprint: str | None = None
    items_digest: str = ""

    def __post_init__(self) -> None:
        self.items_digest = config_hash({"items": self.items})

    def write(self, folder: Path) -> None:
        write_json_atomic(folder / STATE, {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def read(cls, folder: Path) -> ShardState:
        """The state of a complete shard folder; InputError naming it otherwise."""
        path = folder / STATE
        if not path.is_file():
            hint = "a prepared dataset, not a shard" if (folder / CARD).is_file() else "not a complete shard (rerun its --shard command)"
            raise InputError(folder, f"no {STATE}: {hint}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(path, f"unreadable ({err})") from None
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT or data.pop("format_version", None) != FORMAT_VERSION:
            raise InputError(path, f"not a {FORMAT} v{FORMAT_VERSION} file")
        digest = data.pop("items_digest", None)
        try:
            state = cls(**data)
        except TypeError as err:
            raise InputError(path, f"malformed ({err})") from None
        if digest != state.items_digest:
            raise InputError(path, "its list of series does not match its digest (edited or damaged)")
        return state
