"""Bin echo, repetition and inversion times into the integer bins protocol labels use.

MR-CLIP bins TE into 20 equal bins over 0-0.2 s and TR into 20 equal bins over 0-10 s, and
writes the intervals to ``bin_intervals_et_20_rt_20.json``. radlens keeps those defaults,
the 1-based bin ids and the right-closed intervals ``(lower, upper]`` MR-CLIP assigns with, and
fixes what MR-CLIP leaves out:

- every value gets a bin: the first bin also takes values at or below its lower edge (a TE of
  exactly 0) and the last bin takes everything above its upper edge (a TR of 12 s goes in
  bin 20); a negative time is an error, a missing one gets ``None``;
- TI has 8 fixed, clinically meaningful bins (:data:`TI_EDGES`), the last one open (``">2.500"``);
- ``method="quantile"`` places the edges at quantiles of the data instead (:meth:`Binner.fit`).

Interval files use MR-CLIP's shape: ``{"Echo Time": [{"bin": 1, "range": "0.000 - 0.010"}, ...],
"Repetition Time": [...], "Inversion Time": [...]}``. An edge is written with 3 decimals when
that is exact, otherwise with the shortest text that reads back to the same float, so
:func:`read_intervals` returns exactly the binners that were written. An infinite upper edge
is written MR-CLIP's way for an open bin, ``">lower"``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

# Inversion-time bin edges in seconds; bin i is (TI_EDGES[i-1], TI_EDGES[i]].
#   1  <= 0.1 s      very short preparation pulses
#   2  0.1 - 0.3 s   STIR fat nulling (~0.15 s at 1.5 T, ~0.22 s at 3 T)
#   3  0.3 - 0.6 s   IR-prepared fast gradient echo (GE IR-FSPGR/BRAVO ~0.4-0.5 s)
#   4  0.6 - 0.9 s   MPRAGE at 3 T (~0.9 s)
#   5  0.9 - 1.2 s   MPRAGE at 1.5 T (~1.1 s)
#   6  1.2 - 1.8 s   3D FLAIR (~1.6-1.8 s)
#   7  1.8 - 2.5 s   2D FLAIR at 1.5 T and short 3 T FLAIR (~2.0-2.5 s)
#   8  > 2.5 s       long-TR FLAIR at 3 T (~2.6-2.9 s) and beyond
TI_EDGES: tuple[float, ...] = (0.0, 0.1, 0.3, 0.6, 0.9, 1.2, 1.8, 2.5, math.inf)

# Keys of MR-CLIP's interval file, and the metadata column each one bins.
INTERVAL_KEYS = {"Echo Time": "EchoTime", "Repetition Time": "RepetitionTime", "Inversion Time": "InversionTime"}
# Columns radlens writes the bins to (see docs/prepared-dataset.md).
BIN_COLUMNS = {"EchoTime": "TE_bin", "RepetitionTime": "TR_bin", "InversionTime": "TI_bin"}


@dataclass(frozen=True)
class BinningConfig:
    """How TE, TR and TI are binned (times in seconds).

    Attributes:
        te_bins: number of echo-time bins (MR-CLIP: 20).
        te_range: [low, high] echo time in seconds the equal-width TE bins cover (MR-CLIP: 0-0.2).
        tr_bins: number of repetition-time bins (MR-CLIP: 20).
        tr_range: [low, high] repetition time in seconds the equal-width TR bins cover (MR-CLIP: 0-10).
        ti_edges: n+1 increasing inversion-time edges in seconds for n bins (the last may be inf);
            fixed, because they mark physical contrasts.
        method: equal (equal-width TE/TR bins over their ranges) or quantile (TE/TR edges at the data's
            quantiles, same bin counts).
    """

    te_bins: int = 20
    te_range: tuple[float, float] = (0.0, 0.2)
    tr_bins: int = 20
    tr_range: tuple[float, float] = (0.0, 10.0)
    ti_edges: tuple[float, ...] = TI_EDGES
    method: Literal["equal", "quantile"] = "equal"

    def __post_init__(self) -> None:
        if self.method not in ("equal", "quantile"):
            raise ConfigError(f"binning method must be 'equal' or 'quantile', got {self.method!r}")
        Binner.equal(self.te_bins, *self.te_range)
        Binner.equal(self.tr_bins, *self.tr_range)
        Binner(tuple(self.ti_edges))


@dataclass(frozen=True)
class Binner:
    """Bins defined by increasing edges; bin ``i`` (1-based) is ``(edges[i-1], edges[i]]``.

    The first and last bins are open-ended, so every non-negative value has a bin.
    """

    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        e = np.asarray(self.edges, dtype=float)
        if e.ndim != 1 or e.size < 2:
            raise ConfigError(f"bin edges need at least 2 values, got {self.edges!r}")
        if np.isnan(e).any() or np.isinf(e[:-1]).any() or not np.all(np.diff(e) > 0):
            raise ConfigError(f"bin edges must be finite (the last may be inf) and increasing, got {self.edges!r}")
        if e[0] < 0:
            raise ConfigError(f"bin edges are times and cannot be negative, got {self.edges!r}")
        object.__setattr__(self, "edges", tuple(float(x) for x in e))

    @classmethod
    def equal(cls, bins: int, lo: float, hi: float) -> Binner:
        """``bins`` equal-width bins over ``[lo, hi]``."""
        if bins < 1 or not hi > lo:
            raise ConfigError(f"equal bins need bins >= 1 and hi > lo, got bins={bins}, range=({lo}, {hi})")
        # Rounded so edges equal the decimal values people write (0.03, not 0.030000000000000002),
        # which is what MR-CLIP's interval file holds and what a value of exactly 0.03 is compared to.
        return cls(tuple(np.round(np.linspace(lo, hi, bins + 1), 12)))

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    def fit(self, values: Iterable[float | None]) -> Binner:
        """A binner with the same number of bins, edges at quantiles of ``values`` (missing ignored).

        Tied quantiles (many equal values) merge, so the result can have fewer bins.
        """
        v = _as_array(values)
        v = v[~np.isnan(v)]
        if v.size == 0:
            raise InputError(None, "cannot fit quantile bins: no non-missing values")
        _check_non_negative(v)
        edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, self.n_bins + 1)))
        if edges.size < 2:
            # All values equal: a single (open-ended) bin.
            return Binner((0.0, float(edges[0]) if edges[0] > 0 else 1.0))
        return Binner(tuple(edges))

    def assign(self, value: float | None) -> int | None:
        """1-based bin of ``value``; ``None`` when the value is missing."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        out = self.assign_many([value])[0]
        return None if out is None else int(out)

    def assign_many(self, values: Iterable[float | None]) -> pd.Series:
        """Vectorised :meth:`assign`: a pandas ``Int64`` series with ``<NA>`` for missing values."""
        import pandas as pd

        index = values.index if isinstance(values, pd.Series) else None
        v = _as_array(values)
        _check_non_negative(v[~np.isnan(v)])
        # side="left" makes each bin right-closed, (lower, upper], as MR-CLIP's get_bin_label.
        ids = np.searchsorted(np.asarray(self.edges[1:-1]), v, side="left") + 1
        return pd.Series(pd.array(np.where(np.isnan(v), pd.NA, ids), dtype="Int64"), index=index)

    def intervals(self) -> list[dict[str, Any]]:
        """MR-CLIP's list of ``{"bin": i, "range": "lo - hi"}`` (``">lo"`` for an infinite upper edge)."""
        out = []
        for i, (lo, hi) in enumerate(zip(self.edges[:-1], self.edges[1:]), start=1):
            text = f">{_fmt(lo)}" if math.isinf(hi) else f"{_fmt(lo)} - {_fmt(hi)}"
            out.append({"bin": i, "range": text})
        return out

    @classmethod
    def from_intervals(cls, intervals: list[dict[str, Any]], source: str | os.PathLike[str] | None = None) -> Binner:
        """Inverse of :meth:`intervals`; the ranges must be contiguous and sorted by bin."""
        edges: list[float] = []
        try:
            for expected, item in enumerate(intervals, start=1):
                if int(item["bin"]) != expected:
                    raise ValueError(f"bins must be numbered 1, 2, ... in order, found {item['bin']} at {expected}")
                text = str(item["range"]).strip()
                if text.startswith(">"):
                    lo, hi = float(text[1:]), math.inf
                else:
                    lo_text, hi_text = text.split(" - ")
                    lo, hi = float(lo_text), float(hi_text)
                if edges and lo != edges[-1]:
                    raise ValueError(f"bin {expected} starts at {lo}, previous bin ended at {edges[-1]}")
                edges.extend([lo, hi] if not edges else [hi])
            return cls(tuple(edges))
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise InputError(source, f"bad bin intervals: {err}") from err


def binners(cfg: BinningConfig, table: pd.DataFrame | None = None) -> dict[str, Binner]:
    """The TE, TR and TI binners of ``cfg``, keyed by metadata column.

    With ``method="quantile"`` the TE/TR edges are fitted on ``table``'s ``EchoTime`` and
    ``RepetitionTime`` columns (fit on the training split only, then reuse the binners).
    """
    out = {
        "EchoTime": Binner.equal(cfg.te_bins, *cfg.te_range),
        "RepetitionTime": Binner.equal(cfg.tr_bins, *cfg.tr_range),
        "InversionTime": Binner(tuple(cfg.ti_edges)),
    }
    if cfg.method == "quantile":
        if table is None:
            raise ConfigError("quantile binning needs the table to fit the edges on")
        for column in ("EchoTime", "RepetitionTime"):
            out[column] = out[column].fit(table[column])
    return out


def add_bins(table: pd.DataFrame, bins: dict[str, Binner]) -> pd.DataFrame:
    """A copy of ``table`` with ``TE_bin``, ``TR_bin``, ``TI_bin`` (nullable ints) added."""
    out = table.copy()
    for column, binner in bins.items():
        values = out[column] if column in out else [None] * len(out)
        out[BIN_COLUMNS[column]] = binner.assign_many(values).set_axis(out.index)
    return out


def intervals_json(te: Binner, tr: Binner, ti: Binner) -> dict[str, list[dict[str, Any]]]:
    """The interval file's content, in MR-CLIP's shape."""
    return {"Echo Time": te.intervals(), "Repetition Time": tr.intervals(), "Inversion Time": ti.intervals()}


def write_intervals(path: str | os.PathLike[str], te: Binner, tr: Binner, ti: Binner) -> Path:
    """Write the interval file atomically (temporary file in the same folder, then rename)."""
    from radlens.common.atomic import write_bytes_atomic

    text = json.dumps(intervals_json(te, tr, ti), indent=2) + "\n"
    return write_bytes_atomic(Path(path), text.encode())


def read_intervals(path: str | os.PathLike[str]) -> tuple[Binner, Binner, Binner]:
    """Read an interval file (radlens's or MR-CLIP's) back to ``(te, tr, ti)`` binners."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read bin intervals: {err}") from err
    if not isinstance(data, dict):
        raise InputError(path, "bin intervals must be a JSON object")
    missing = [key for key in INTERVAL_KEYS if key not in data]
    if missing:
        raise InputError(path, f"bin intervals lack {missing}")
    te, tr, ti = (Binner.from_intervals(data[key], path) for key in INTERVAL_KEYS)
    return te, tr, ti


def _fmt(edge: float) -> str:
    """3 decimals as MR-CLIP writes them when exact, else the shortest round-tripping text."""
    text = f"{edge:.3f}"
    return text if float(text) == edge else repr(edge)


def _as_array(values: Iterable[float | None]) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="raise").to_numpy(dtype=float, na_value=np.nan)


def _check_non_negative(v: np.ndarray) -> None:
    if (v < 0).any():
        raise InputError(None, f"times cannot be negative, got {v[v < 0][:3].tolist()}")
