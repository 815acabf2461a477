"""Protocol labels: one integer per acquisition protocol, built from the typed metadata columns.

A protocol key joins, with ``|``, the plane, the scanner (manufacturer, model, field strength),
the sequence (scanning sequence, variant, 2D/3D), the flip angle and the TE/TR/TI bins, e.g.
``axial|SIEMENS|Skyra|3|SE|SK_SP|2D|90|TE5|TR3|TI-``. Missing values read ``-``.

MR-CLIP builds the same key by parsing its captions back with regular expressions, which
silently loses fields (its labels collapse to the plane). radlens never parses captions: the
key is made from the table's columns, and bins come from :func:`radlens.prepare.binning.add_bins`.
Ids are assigned over the sorted keys, so the same data always gets the same ids, and a
mapping from the training data can be reused for validation/test data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

MISSING = "-"
# Bin columns get a short prefix in the key ("TE5"), other fields are written bare.
BIN_PREFIXES = {"TE_bin": "TE", "TR_bin": "TR", "TI_bin": "TI"}


@dataclass(frozen=True)
class LabelConfig:
    """Columns that make up a protocol key, in key order."""

    fields: tuple[str, ...] = (
        "plane",
        "Manufacturer",
        "ManufacturersModelName",
        "MagneticFieldStrength",
        "ScanningSequence",
        "SequenceVariant",
        "MRAcquisitionType",
        "FlipAngle",
        "TE_bin",
        "TR_bin",
        "TI_bin",
    )

    def __post_init__(self) -> None:
        if not self.fields:
            raise ConfigError("a protocol label needs at least one field")
        if len(set(self.fields)) != len(self.fields):
            raise ConfigError(f"protocol label fields repeat: {list(self.fields)}")


def protocol_keys(table: pd.DataFrame, cfg: LabelConfig = LabelConfig()) -> pd.Series:
    """Readable protocol key of every row (see the module docstring for the format)."""
    missing = [name for name in cfg.fields if name not in table.columns]
    if missing:
        hint = " (add TE/TR/TI bins with radlens.prepare.binning.add_bins)" if set(missing) & set(BIN_PREFIXES) else ""
        raise ConfigError(f"protocol label fields missing from the table: {missing}{hint}")
    parts = [table[name].map(lambda v, name=name: _key_part(name, v)) for name in cfg.fields]
    keys = parts[0].str.cat(parts[1:], sep="|") if len(parts) > 1 else parts[0]
    return keys.rename("protocol_key")


def assign_labels(
    keys: pd.Series, existing: Mapping[str, int] | None = None
) -> tuple[pd.Series, dict[int, str]]:
    """Integer label per key, and the id -> key mapping.

    Without ``existing``, ids 0..n-1 follow the sorted distinct keys. With ``existing`` (the
    training data's ``{key: id}``), known keys keep their ids and new keys, sorted, get ids after
    the largest existing one. Missing keys get ``-1``. The returned mapping covers ``existing``
    and the new keys, so it can be passed on again.
    """
    import pandas as pd

    mapping = {str(k): int(v) for k, v in (existing or {}).items()}
    if len(set(mapping.values())) != len(mapping):
        raise ConfigError("existing label mapping gives two keys the same id")
    present = keys.dropna().astype(str)
    next_id = max(mapping.values(), default=-1) + 1
    for key in sorted(set(present) - set(mapping)):
        mapping[key] = next_id
        next_id += 1
    ids = pd.Series(-1, index=keys.index, dtype="int64", name="label")
    ids.loc[present.index] = present.map(mapping).astype("int64")
    return ids, {v: k for k, v in sorted(mapping.items(), key=lambda kv: kv[1])}


def label_distribution(
    series: pd.DataFrame,
    names: Mapping[int, str] | None = None,
    slices: pd.DataFrame | None = None,
    patient_col: str = "patient_id",
) -> pd.DataFrame:
    """Counts per protocol label: series, patients, slices (when ``slices`` is given), series per split.

    ``series`` needs ``label`` and ``patient_col`` (and ``split`` for per-split columns);
    ``slices`` needs ``label``. Rows are sorted by label; ``key`` comes from ``names``.
    """
    import pandas as pd

    for column in ("label", patient_col):
        if column not in series.columns:
            raise ConfigError(f"label_distribution needs a {column!r} column")
    grouped = series.groupby("label")
    out = pd.DataFrame({"n_series": grouped.size(), "n_patients": grouped[patient_col].nunique()})
    if slices is not None:
        out["n_slices"] = slices.groupby("label").size().reindex(out.index, fill_value=0)
    if "split" in series.columns:
        per_split = series.groupby(["label", "split"]).size().unstack(fill_value=0)
        for split in per_split.columns:
            out[f"n_series_{split}"] = per_split[split].reindex(out.index, fill_value=0)
    out.insert(0, "key", [(names or {}).get(int(i), MISSING) for i in out.index])
    return out.reset_index().sort_values("label", ignore_index=True)


def _key_part(name: str, value: Any) -> str:
    prefix = BIN_PREFIXES.get(name, "")
    if _missing(value):
        return prefix + MISSING
    if prefix:
        text = str(int(value))
    elif isinstance(value, (list, tuple, np.ndarray)):
        text = "_".join(str(v).strip() for v in value)
    elif isinstance(value, (float, np.floating)):
        text = f"{float(value):g}"
    else:
        text = str(value).strip()
    # "|" separates the key's parts, so it cannot appear inside one.
    return f"{prefix}{text}".replace("|", "/") or MISSING


def _missing(value: Any) -> bool:
    import pandas as pd

    if value is None or value is pd.NA:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return isinstance(value, (str, list, tuple, np.ndarray)) and len(value) == 0
