"""``--shard i/n``: which part of a batch job one machine does.

A batch scheduler (a SLURM array, any job runner) starts ``n`` copies of a command, the ``i``-th
with ``--shard i/n`` (``i`` counts from 0, so ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``
works as it is). Two ways of assigning work, both independent of the order in which any one
machine finds its inputs:

- :meth:`Shard.owns` by key: a key (a patient id, a study id) belongs to shard
  ``sha256(key) mod n``, so every machine agrees without talking to the others, and a key stays
  on its shard whatever else is in the dataset;
- :meth:`Shard.block` by position in an already ordered table: the ``i``-th of ``n`` contiguous
  blocks, so the shards' outputs concatenated in shard order are the unsharded output.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from radlens.errors import ConfigError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"a shard is i/n with 0 <= i < n, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, spec: str | None) -> Shard | None:
        """``"i/n"`` as a Shard; None for None or ``""`` (the whole job)."""
        if spec is None or not str(spec).strip():
            return None
        match = _SPEC.match(str(spec))
        if match is None:
            raise ConfigError(f"--shard takes i/n (e.g. 0/4; i counts from 0), got {spec!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """A file-name-safe form, ``shard-00000-of-00004``."""
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def owns(self, key: str) -> bool:
        """Whether ``key`` falls to this shard (:func:`shard_of`)."""
        return shard_of(key, self.count) == self.index

    def block(self, total: int) -> slice:
        """Rows ``[i * total // n, (i + 1) * total // n)`` of a table of ``total`` rows."""
        return slice(self.index * total // self.count, (self.index + 1) * total // self.count)

    def batch_rows(self, total: int, batch_size: int) -> slice:
        """The rows of this shard's :meth:`block` of whole batches: each batch holds the same rows as
        in the unsharded run, so batched computations give the same numbers."""
        batches = self.block(-(-total // batch_size))
        return slice(min(batches.start * batch_size, total), min(batches.stop * batch_size, total))


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of ``key``: the first 8 bytes of its SHA-256 modulo ``count``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count
