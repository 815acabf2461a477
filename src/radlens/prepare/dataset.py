"""Writing a prepared dataset folder: atomic files, per-series work records, assembled tables.

The layout is specified in ``docs/prepared-dataset.md``. Each prepared series first becomes an
array in ``arrays/`` (and its label map in ``masks/``) and a JSON record in ``work/`` (its table rows plus a fingerprint of its
inputs and config); the tables and the card are assembled from the records at the end. A rerun
with the same inputs and config finds the records and skips those series, so an interrupted
``radlens prepare`` can simply be run again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.common.atomic import json_default, write_csv_atomic, write_json_atomic

if TYPE_CHECKING:
    import pandas as pd

ARRAYS = "arrays"
MASKS = "masks"
WORK = "work"
EXTRAS = "extras"
CARD = "dataset.json"
SERIES = "series.parquet"
SLICES = "slices.parquet"
FAILURES = "failures.csv"
FAILURE_COLUMNS = ("path", "stage", "reason")
# Key of ``Volume.metadata.extra`` where an importer's ``load`` leaves columns it measured while
# reading a series (e.g. CT-RATE's HU check); they join the series row.
TABLE_COLUMNS = "table_columns"


@dataclass(frozen=True)
class SeriesItem:
    """One input an importer found: ids, where its files are, and what is already known about it.

    ``inputs`` are absolute paths of every file the series is read from (they make the
    fingerprint); ``fields`` are extra table columns known before reading (report sections,
    finding labels, the source's own split). Items are picklable so workers can take them.
    """

    series_id: str
    patient_id: str
    study_id: str
    source_path: str
    inputs: tuple[str, ...]
    scan_id: str = ""
    modality: str | None = None
    text: str | None = None
    rescale: tuple[float, float] | None = None
    # A label map in the image's voxel grid (``radlens.prepare.masks``): its absolute path, the
    # label table naming its ids (None: ids as found, named label_<id>) and whether it is a
    # binary mask (one non-zero value -> 1). The mask and its table file belong in ``inputs``.
    mask: str | None = None
    mask_labels: dict[int, str] | None = None
    mask_binary: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    # A slice-level lesion flag known without a mask (CLEAR's ``lesion_present``: 1, 0, -1 unknown):
    # the ``lesion`` of every slice of the series when it has no mask (a mask decides otherwise).
    lesion: int | None = None


@dataclass(frozen=True)
class Failure:
    """An input that was skipped, with the stage it failed at and why."""

    path: str
    stage: str
    reason: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Discovery:
    """What an importer found: the series to prepare, inputs it skipped, finding label columns,
    notes for the card (e.g. duplicate table rows it ignored) and, when its ids are keyed
    pseudonyms (:class:`radlens.io.phi.PhiKey`), the key's fingerprint."""

    items: list[SeriesItem]
    failures: list[Failure]
    findings: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    phi_key_fingerprint: str | None = None


@dataclass
class SeriesRecord:
    """What preparing one series produced: its series row, (2D) its slice rows and the label
    table of its mask (id as a string -> name; empty without a mask)."""

    fingerprint: str
    row: dict[str, Any]
    slices: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def config_hash(config: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able config dict."""
    text = json.dumps(config, sort_keys=True, default=json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def fingerprint(item: SeriesItem, config_digest: str) -> str:
    """Hash of the item (ids, text, fields), its input files' size and mtime, and the config."""
    stats = []
    for p in item.inputs:
        st = os.stat(p)
        stats.append([p, st.st_size, st.st_mtime_ns])
    payload = {"item": asdict(item), "files": stats, "config": config_digest}
    return config_hash(payload)


def safe_name(series_id: str) -> str:
    """A file name for a series id (ids may hold characters that are awkward in paths)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in series_id)


def remove_temporaries(out: Path) -> None:
    """Delete the temporary files (``.<name>.<random>.tmp``) an interrupted or killed run left in
    ``arrays/``, ``masks/`` and ``work/``: one ``radlens prepare`` writes an output folder at a time."""
    for folder in (ARRAYS, MASKS, WORK):
        for tmp in (out / folder).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class WorkRecords:
    """Per-series records under ``OUT/work/``: the resume state of ``radlens prepare``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.dir = out / WORK

    def _path(self, series_id: str) -> Path:
        return self.dir / f"{safe_name(series_id)}.json"

    def load(self, series_id: str, expected: str) -> SeriesRecord | None:
        """The record of a series prepared with the same fingerprint, if its array is intact."""
        path = self._path(series_id)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("fingerprint") != expected:
            return None
        if not (self.out / data["row"]["array_path"]).is_file():
            return None
        mask_path = data["row"].get("mask_path")
        if mask_path and not (self.out / mask_path).is_file():
            return None
        return SeriesRecord(data["fingerprint"], data["row"], data.get("slices", []), data.get("labels", {}))

    def save(self, series_id: str, record: SeriesRecord) -> None:
        write_json_atomic(self._path(series_id), asdict(record))


def failures_frame(failures: Iterable[Failure]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([asdict(f) for f in failures], columns=list(FAILURE_COLUMNS))


def write_tables(
    out: Path,
    series: pd.DataFrame,
    slices: pd.DataFrame | None,
    failures: list[Failure],
    card: dict[str, Any],
) -> None:
    """Write the tables, ``failures.csv`` and, last, the card (its presence marks a finished folder)."""
    _write_parquet(out / SERIES, series)
    if slices is not None:
        _write_parquet(out / SLICES, slices)
    else:
        (out / SLICES).unlink(missing_ok=True)
    write_csv_atomic(out / FAILURES, failures_frame(failures))
    write_json_atomic(out / CARD, card)



# Columns whose parquet type is fixed, so that a column with only nulls or empty lists keeps it.
_TYPED_COLUMNS = {"labels_present": "list<int64>", "boxes": "string", "mask_path": "string"}


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """A table as parquet (atomically) with the mask columns typed: ``labels_present`` list<int64>
    and ``boxes`` string even when every row is null or empty."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from radlens.common.atomic import atomic_path

    table = pa.Table.from_pandas(frame, preserve_index=False)
    types = {"list<int64>": pa.list_(pa.int64()), "string": pa.string()}
    for name, kind in _TYPED_COLUMNS.items():
        if name in table.column_names:
            i = table.column_names.index(name)
            table = table.set_column(i, pa.field(name, types[kind]), table.column(i).cast(types[kind]))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _split_table(series: pd.DataFrame, cfg: Any, stratify_on: list[str]) -> pd.DataFrame:
    """Splits and folds by patient; a source's own split (CT-RATE ``valid``, M3D, CSV) is kept where given."""
    import dataclasses

    from radlens.prepare.splits import add_splits

    split_cfg = cfg.split
    if "source_split" in series.columns:
        # CT-RATE: its valid part is the evaluation set; its train part is split by patient.
        valid = {"valid": cfg.source_valid_split, "validation": cfg.source_valid_split}
        series["split_given"] = series["source_split"].map(valid)
        split_cfg = dataclasses.replace(split_cfg, keep_existing=True, existing_col="split_given")
    if split_cfg.keep_existing and split_cfg.existing_col not in series.columns:
        series[split_cfg.existing_col] = None
    out = add_splits(series, split_cfg, "patient_id", stratify_on or None)
    return out.drop(columns=["split_given"], errors="ignore")


def _protocol_labels(out: Path, series: pd.DataFrame, cfg: Any) -> tuple[pd.DataFrame, dict[int, str]]:
    """TE/TR/TI bins (fitted on the training split when quantile) and protocol label ids."""
    from radlens.prepare.binning import add_bins, binners, write_intervals
    from radlens.prepare.labels import assign_labels, protocol_keys

    train = series[series["split"] == "train"]
    bins = binners(cfg.binning, train if len(train) else series)
    series = add_bins(series, bins)
    write_intervals(out / EXTRAS / "bin_intervals.json", bins["EchoTime"], bins["RepetitionTime"], bins["InversionTime"])
    series["label"], names = assign_labels(protocol_keys(series, cfg.labels))
    return series, names


def _intensity_note(modalities: set[str], cfg: Any) -> str:
    notes = []
    if "CT" in modalities:
        notes.append(f"CT: HU clipped to {list(cfg.intensity.ct_window)} -> {cfg.intensity.ct_output}")
    if "MR" in modalities:
        lo, hi = cfg.intensity.mri_percentiles
        notes.append(f"MRI: percentiles ({lo}, {hi}) of the {cfg.intensity.mri_mask} voxels per volume -> [0, 1]")
    if modalities - {"CT", "MR"}:
        notes.append("other: values as stored by the source (M3D arrays in [0, 1]; integer images / type maximum)")
    return "; ".join(notes)


def _mask_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``mask_path`` ("" without a mask), ``labels_present`` (list of ids, null without a mask)
    and ``boxes`` (JSON string, null without a mask); :func:`_write_parquet` types them."""
    import pandas as pd

    table = table.copy()
    table["mask_path"] = table["mask_path"].fillna("").astype(str) if "mask_path" in table else ""
    present = table["labels_present"] if "labels_present" in table else [None] * len(table)
    values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else [int(i) for i in v] for v in present]
    table["labels_present"] = pd.Series(values, index=table.index, dtype=object)
    boxes = table["boxes"] if "boxes" in table else [None] * len(table)
    table["boxes"] = pd.Series([v if isinstance(v, str) else None for v in boxes], index=table.index, dtype=object)
    return table


def assemble(
    out: Path,
    source: str,
    root: Path,
    cfg: Any,
    records: list[SeriesRecord],
    failures: list[Failure],
    findings: tuple[str, ...] = (),
    protocol_labels: bool = False,
    notes: tuple[str, ...] = (),
    phi_key_fingerprint: str | None = None,
) -> dict[str, Any] | None:
    """Assign splits, bins and labels over all series and write tables, extras and the card.

    ``phi_key_fingerprint`` (ids made with a pseudonym key) goes into the card, so datasets made
    with different keys can be told apart. Returns the card, or None (writing only
    ``failures.csv``) when no series was prepared.
    """
    import datetime

    import pandas as pd

    import radlens
    from radlens.prepare.labels import label_distribution
    from radlens.prepare.masks import merge_schemes

    if not records:
        out.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(out / FAILURES, failures_frame(failures))
        return None
    series = pd.DataFrame([r.row for r in records])
    series = _mask_columns(series)
    present = [f for f in findings if f in series.columns]
    for name in present:
        series[name] = series[name].fillna(-1).astype("int8")
    stratify_on = present or (["label"] if "label" in series.columns else [])
    series = _split_table(series, cfg, stratify_on)
    names: dict[int, str] = {}
    if protocol_labels:
        series, names = _protocol_labels(out, series, cfg)
    series["label"] = series["label"].fillna(-1).astype("int64") if "label" in series.columns else -1
    slices = None
    if cfg.dims == 2:
        copied = series.set_index("series_id")[["patient_id", "array_path", "mask_path", "split", "text", "label"]]
        rows = [{"series_id": r.row["series_id"], **s} for r in records for s in r.slices]
        slices = _mask_columns(pd.DataFrame(rows)).drop(columns=["mask_path"]).join(copied, on="series_id")
        slices["lesion"] = slices["lesion"].astype("int8")
        order = ["slice_id", "series_id", "patient_id", "array_path", "row", "slice_index", "position", "plane",
                 "split", "text", "label", "foreground", "lesion", "mask_path", "labels_present", "boxes"]
        slices = slices[order + [c for c in slices.columns if c not in order]]
        series["n_slices"] = slices.groupby("series_id").size().reindex(series["series_id"]).to_numpy()
    if protocol_labels:
        dist = label_distribution(series, names, slices)
        write_csv_atomic(out / EXTRAS / "label_distribution.csv", dist)
    modalities = set(series["modality"].replace("", "other"))
    shapes = {tuple(s) for s in series["shape"]} if cfg.dims == 3 else {tuple(cfg.slicing.slice_shape)}
    card = {
        "radlens_version": radlens.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"kind": source, "path": str(root)},
        "config": cfg.to_dict(),
        "dims": cfg.dims,
        "modality": next(iter(modalities)) if len(modalities) == 1 else "mixed",
        "array_shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
        "dtype": cfg.dtype,
        "intensity": _intensity_note(modalities, cfg),
        "findings": present,
        "label_names": {str(k): v for k, v in names.items()},
        "labels": merge_schemes([r.labels for r in records if r.labels], out),
        "notes": list(notes),
        **({"pseudonym_key_fingerprint": phi_key_fingerprint} if phi_key_fingerprint else {}),
        "counts": {
            "patients": int(series["patient_id"].nunique()),
            "series": len(series),
            "slices": len(slices) if slices is not None else 0,
            "failures": len(failures),
            "split": {k: int(v) for k, v in series["split"].value_counts().sort_index().items()},
        },
    }
    write_tables(out, series, slices, failures, card)
    return card
