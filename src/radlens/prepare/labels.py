"""Protocol labels: one integer per acquisition protocol, built from the typed metadata columns.

A protocol key joins, with ``|``, the plane, the scanner (manufacturer, model, field strength),
the sequence (scanning sequence, variant, 2D/3D), the flip angle and the TE/TR/TI bins, e.g.
``axial|Siemens|SKYRA|3|SE|SK_SP|2D|90|TE5|TR3|TI-``. Missing values read ``-``.

Scanners write one thing many ways, and a key that kept every spelling would give one scanner as
many protocols as it has firmware versions. Before the key is built (:func:`normalise_fields`):
the manufacturer becomes its vendor (``SIEMENS``, ``Siemens Healthineers`` -> ``Siemens``;
``GE MEDICAL SYSTEMS``, ``GE HealthCare`` -> ``GE``; ``Philips Medical Systems``, ``PHILIPS`` ->
``Philips``; ...), the model name is upper-cased with ``_``/``-`` as spaces (``Avanto_fit``,
``Avanto fit`` -> ``AVANTO FIT``), the field strength snaps to its nominal value (2.89 T, 3.0 T,
30000 G -> 3; 1.494 -> 1.5), sequence codes are upper-cased, de-duplicated and sorted (DICOM's
multi-valued codes have no order), and the flip angle is rounded to a degree. The stored columns
keep what the scanner wrote; only the key is normalised.

MR-CLIP builds the same key by parsing its captions back with regular expressions, which
silently loses fields (its labels collapse to the plane). radlens never parses captions: the
key is made from the table's columns, and bins come from :func:`radlens.prepare.binning.add_bins`.
Ids are assigned over the sorted keys, so the same data always gets the same ids, and a
mapping from the training data can be reused for validation/test data.
"""

from __future__ import annotations

import math
import re
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
# Vendor of a manufacturer string: the first alias found in its lower-cased words (after
# punctuation), in this order (so "GE Healthcare" is GE, "Canon Medical Systems" Canon).
VENDOR_ALIASES: tuple[tuple[str, str], ...] = (
    ("siemens", "Siemens"), ("philips", "Philips"), ("general electric", "GE"), ("ge", "GE"),
    ("canon", "Canon"), ("toshiba", "Toshiba"), ("hitachi", "Hitachi"), ("fujifilm", "Fujifilm"),
    ("gems", "GE"), ("united imaging", "United Imaging"), ("uih", "United Imaging"), ("esaote", "Esaote"), ("bruker", "Bruker"),
    ("neusoft", "Neusoft"), ("mindray", "Mindray"),
)
# Nominal field strengths (T); a written value within 5% of one is that one (2.89 -> 3, 1.494 -> 1.5).
NOMINAL_TESLA = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.55, 0.6, 0.7, 1.0, 1.2, 1.5, 2.0, 3.0, 4.0, 4.7, 5.0, 7.0, 9.4,
                 10.5, 11.7, 14.1)


@dataclass(frozen=True)
class LabelConfig:
    """Columns that make up a protocol key, in key order.

    Attributes:
        fields: series columns joined into the protocol key, in order (bins: TE_bin, TR_bin, TI_bin);
            scanner and sequence fields are normalised first (see the module docstring).
    """

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
    """Readable protocol key of every row from its :func:`normalise_fields` values (see the module docstring)."""
    missing = [name for name in cfg.fields if name not in table.columns]
    if missing:
        hint = " (add TE/TR/TI bins with radlens.prepare.binning.add_bins)" if set(missing) & set(BIN_PREFIXES) else ""
        raise ConfigError(f"protocol label fields missing from the table: {missing}{hint}")
    table = normalise_fields(table[list(cfg.fields)])
    parts = [table[name].map(lambda v, name=name: _key_part(name, v)) for name in cfg.fields]
    keys = parts[0].str.cat(parts[1:], sep="|") if len(parts) > 1 else parts[0]
    return keys.rename("protocol_key")


def vendor(manufacturer: Any) -> Any:
    """The vendor of a Manufacturer string (see :data:`VENDOR_ALIASES`); unknown ones upper-cased, missing kept."""
    if _missing(manufacturer):
        return manufacturer
    text = str(manufacturer).strip()
    words = " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())
    for alias, name in VENDOR_ALIASES:
        if re.search(rf"\b{re.escape(alias)}\b", words):
            return name
    return " ".join(text.upper().split()) or None


def model_name(model: Any) -> Any:
    """A scanner model name upper-cased with ``_``/``-`` and repeated spaces as one space (missing kept)."""
    if _missing(model):
        return model
    return " ".join(re.sub(r"[_\-]+", " ", str(model)).upper().split()) or None


def field_strength(tesla: Any) -> Any:
    """A field strength at its nominal value (:data:`NOMINAL_TESLA`, within 5%); gauss (> 100) read as tesla / 10^4."""
    if _missing(tesla):
        return tesla
    try:
        value = float(tesla)
    except (TypeError, ValueError):
        return tesla
    if not math.isfinite(value) or value <= 0:
        return None
    value = value / 10_000 if value > 100 else value
    nearest = min(NOMINAL_TESLA, key=lambda t: abs(t - value))
    return nearest if abs(nearest - value) <= 0.05 * nearest else round(value, 1)


def sequence_codes(codes: Any) -> Any:
    """Multi-valued sequence codes upper-cased, de-duplicated and sorted (``NONE`` dropped next to others)."""
    if _missing(codes):
        return codes
    items = codes if isinstance(codes, (list, tuple, np.ndarray)) else re.split(r"[\\_/ ,]+", str(codes))
    out = sorted({str(c).strip().upper() for c in items if str(c).strip()})
    return tuple(c for c in out if c != "NONE" or len(out) == 1) or None


def normalise_fields(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose scanner and sequence columns (those present) hold one spelling per meaning:
    :func:`vendor`, :func:`model_name`, :func:`field_strength`, :func:`sequence_codes`, the acquisition
    type upper-cased and the flip angle rounded to a degree. Other columns are unchanged."""
    steps = {
        "Manufacturer": vendor,
        "ManufacturersModelName": model_name,
        "MagneticFieldStrength": field_strength,
        "ScanningSequence": sequence_codes,
        "SequenceVariant": sequence_codes,
        "MRAcquisitionType": lambda v: v if _missing(v) else str(v).strip().upper(),
        "FlipAngle": lambda v: v if _missing(v) else float(round(float(v))),
    }
    out = table.copy()
    for column, step in steps.items():
        if column in out.columns:
            out[column] = out[column].map(step).astype(object)
    return out


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
