"""A bounded least-recently-used cache of tensors, for the frozen text towers of :mod:`radlens.models.text`.

A frozen tower gives each distinct text (or sentence) the same vector every time, so it encodes it
once and then reads it from here. At CT-RATE scale (50k reports of ~20 sentences) an unbounded map
grows with the data; this one drops the least recently used entries beyond ``max_entries`` entries
or ``max_bytes`` bytes of tensor data.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch

from radlens.errors import ConfigError


class LRUCache:
    """``key -> tensor``, at most ``max_entries`` entries and ``max_bytes`` bytes (None: no such bound).

    Values are kept as given (the caller stores CPU copies that share no storage with anything
    else, so that the byte count is what evicting frees). A value larger than ``max_bytes`` on its
    own is not stored. A copy (``copy.deepcopy``, pickling) starts empty with the same bounds: a
    cache is derived from the weights, and a copied tower may get other weights.
    """

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        for name, bound in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
                raise ConfigError(f"cache {name} must be an int >= 0 or None, got {bound!r}")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._data: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The value for ``key`` (now the most recently used), or None."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        """Store ``value`` as the most recently used entry, then evict down to the bounds."""
        size = value.numel() * value.element_size()
        if self.max_entries == 0 or (self.max_bytes is not None and size > self.max_bytes):
            return
        old = self._data.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        self._data[key] = value
        self.nbytes += size
        while (self.max_entries is not None and len(self._data) > self.max_entries) or (
            self.max_bytes is not None and self.nbytes > self.max_bytes
        ):
            _, dropped = self._data.popitem(last=False)
            self.nbytes -= dropped.numel() * dropped.element_size()

    def clear(self) -> None:
        self._data.clear()
        self.nbytes = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"max_entries": self.max_entries, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_entries"], state["max_bytes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        bounds = f"max_entries={self.max_entries}, max_bytes={self.max_bytes}"
        return f"LRUCache({len(self)} entries, {self.nbytes} bytes, {bounds})"
