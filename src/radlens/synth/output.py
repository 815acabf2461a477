"""The output of ``radlens synth``: a prepared 2D dataset of the kept candidates, with their provenance.

Layout (``docs/prepared-dataset.md``; written with :func:`radlens.prepare.dataset.write_tables`, so
every radlens command reads it):

- one **series per source series and rank**: ``{source series}_synth-{contrast}-r{rank}`` holds, for each
  source slice of that series, its ``rank``-th kept candidate (rank 0: the best). With the default
  ``keep`` 2 a source series becomes two synthetic series of the same anatomy; a slice whose filter kept
  fewer candidates (relaxed level) is missing from the higher ranks. Patient ids and splits are the
  source's, so held-out patients stay held out;
- ``masks/``: the conditioning label maps (the source masks), ``labels`` in the card = the source's;
- ``contrast`` = the target contrast the prompts asked for; ``EchoTime``/``RepetitionTime``/``InversionTime``
  (seconds) = the generator's typical values for it, as written in the prompts;
- per slice: ``source_slice_id``, ``candidate``, ``seed``, ``prompt``, ``filter_level`` (relaxation level
  that kept it; -1 unfiltered), ``filter_label_threshold``/``filter_mean_threshold`` (of that level),
  ``agreement_mean_dice``/``agreement_mean_iou`` and ``agreement`` (JSON per label name: dice, iou);
- ``extras/candidates.parquet``: every candidate of every mask (kept or not) with its seed and scores;
- ``arrays/`` and ``masks/`` hold only the listed series (files of an earlier run with other settings are removed);
- the card: the source card's preprocessing (``config``, ``intensity``, ``array_shape``, ``labels``), the
  source ``{"kind": "synth", "path": DATA}`` and a ``synth`` section (generator, segmenter, settings, counts).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.common.atomic import save_array_atomic, write_parquet_atomic
from radlens.prepare.dataset import ARRAYS, EXTRAS, MASKS, SeriesRecord, safe_name, write_tables

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.prepared import PreparedDataset
    from radlens.synth.sources import SourceMask

CANDIDATES = "candidates.parquet"
_TIME_FIELDS = {"EchoTime": "echo_time", "RepetitionTime": "repetition_time", "InversionTime": "inversion_time"}


def synth_series_id(source_series: str, contrast: str, rank: int) -> str:
    """The id of the synthetic series holding rank ``rank`` of a source series' slices."""
    return f"{source_series}_synth-{contrast}-r{rank}"


def _seconds(value: Any) -> float | None:
    """A prompt field in milliseconds (text) as seconds, or None."""
    try:
        return float(value) / 1000.0 if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _series_row(ds: PreparedDataset, source_series: str, sid: str, rank: int, contrast: str, n: int,
                stack: np.ndarray, fields: dict[str, Any], text: str) -> dict[str, Any]:
    from radlens.prepare.masks import mask_columns

    src = ds.series.set_index("series_id").loc[source_series]
    row: dict[str, Any] = {
        "series_id": sid, "patient_id": str(src["patient_id"]), "study_id": str(src.get("study_id", src["patient_id"])),
        "scan_id": sid, "source_path": f"{ds.path}::{source_series}", "array_path": f"{ARRAYS}/{safe_name(sid)}.npy",
        "mask_path": f"{MASKS}/{safe_name(sid)}.npy", "modality": str(src.get("modality", "MR")), "plane": str(src.get("plane", "")),
        "split": str(src["split"]), "fold": int(src["fold"]) if "fold" in src.index and src["fold"] == src["fold"] else -1,
        "text": text, "label": -1, "contrast": contrast, "n_slices": n,
        "BodyPartExamined": src.get("BodyPartExamined"), "synth_source_series": source_series, "synth_rank": rank,
        **{column: _seconds(fields.get(name)) for column, name in _TIME_FIELDS.items()},
        **mask_columns(stack),
    }
    for key in ("orig_shape", "orig_spacing", "shape", "spacing"):
        if key in src.index:
            row[key] = list(src[key]) if src[key] is not None else None
    return row


def assemble(out: Path, ds: PreparedDataset, masks: Sequence[SourceMask], records: dict[str, SeriesRecord],
             contrast: str, contrast_fields: dict[str, Any], series_text: str, synth_card: dict[str, Any]) -> dict[str, Any]:
    """Write arrays, masks, tables, ``extras/candidates.parquet`` and (last) the card from the per-mask records."""
    import pandas as pd

    from radlens.prepare.masks import mask_columns

    lesion_ids = [i for i, name in ds.labels.items() if name == "lesion"]
    by_series: dict[str, list[SourceMask]] = {}
    for m in masks:
        by_series.setdefault(m.series_id, []).append(m)
    series_rows, slice_rows, candidate_rows = [], [], []
    for m in masks:
        for c in records[m.key].slices:
            candidate_rows.append({"source_slice_id": m.key, "patient_id": m.patient_id, "split": m.split, "prompt": m.prompt, **c})
    order = [sid for sid in ds.series["series_id"] if sid in by_series]
    for source_series in order:
        kept = [(m, records[m.key]) for m in by_series[source_series]]
        depth = max((int(r.row["n_kept"]) for _, r in kept), default=0)
        for rank in range(depth):
            members = [(m, r) for m, r in kept if int(r.row["n_kept"]) > rank]
            sid = synth_series_id(source_series, contrast, rank)
            images = np.stack([np.load(out / r.row["array_path"], mmap_mode="r")[rank] for _, r in members]).astype(np.float32)
            labels = np.stack([np.asarray(ds.slice_mask(m.row)) for m, _ in members])
            save_array_atomic(out / ARRAYS / f"{safe_name(sid)}.npy", images)
            save_array_atomic(out / MASKS / f"{safe_name(sid)}.npy", labels)
            row = _series_row(ds, source_series, sid, rank, contrast, len(members), labels, contrast_fields, series_text)
            series_rows.append(row)
            for k, (m, r) in enumerate(members):
                chosen = next(c for c in r.slices if c["kept_rank"] == rank)
                slice_rows.append({
                    "slice_id": f"{sid}:{m.slice_index}", "series_id": sid, "patient_id": m.patient_id,
                    "array_path": row["array_path"], "row": k, "slice_index": m.slice_index, "position": m.position,
                    "plane": m.plane, "split": m.split, "text": series_text, "label": -1, "foreground": m.foreground,
                    "lesion": int(any(i in m.labels for i in lesion_ids) if lesion_ids else bool(m.labels)),
                    "mask_path": row["mask_path"], **mask_columns(labels[k]),
                    "source_slice_id": m.key, "candidate": int(chosen["candidate"]), "seed": int(chosen["seed"]),
                    "prompt": m.prompt, "filter_level": int(r.row["level"]) if r.row["level"] is not None else -1,
                    "filter_label_threshold": r.row["thresholds"][0] if r.row["thresholds"] else None,
                    "filter_mean_threshold": r.row["thresholds"][1] if r.row["thresholds"] else None,
                    "agreement_mean_dice": chosen["mean_dice"], "agreement_mean_iou": chosen["mean_iou"],
                    "agreement": None if chosen["scores"] is None else json.dumps(chosen["scores"]),
                })
    if not series_rows:
        return {}
    series, slices = pd.DataFrame(series_rows), pd.DataFrame(slice_rows)
    (out / EXTRAS).mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(out / EXTRAS / CANDIDATES, _candidates_frame(candidate_rows))
    card = _card(ds, series, slices, synth_card)
    write_tables(out, series, slices, [], card)
    listed = {Path(p).name for p in (*series["array_path"], *series["mask_path"])}
    for folder in (ARRAYS, MASKS):  # series an earlier run with other settings wrote
        for stale in (out / folder).glob("*.npy"):
            if stale.name not in listed:
                stale.unlink()
    return card


def _candidates_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if "scores" in frame.columns:
        frame["scores"] = frame["scores"].map(lambda v: v if isinstance(v, str) or v is None else json.dumps(v))
    return frame


def _card(ds: PreparedDataset, series: pd.DataFrame, slices: pd.DataFrame, synth: dict[str, Any]) -> dict[str, Any]:
    import radlens

    source = ds.card
    keep = ("config", "dims", "modality", "array_shape", "dtype", "intensity", "labels")
    return {
        "radlens_version": radlens.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"kind": "synth", "path": str(ds.path)},
        **{k: source[k] for k in keep if k in source},
        "dtype": "float32",
        "findings": [],
        "label_names": {},
        "notes": [f"synthetic images generated by radlens synth from the masks of {ds.path} (see the synth section)"],
        "synth": synth,
        "counts": {
            "patients": int(series["patient_id"].nunique()), "series": len(series), "slices": len(slices), "failures": 0,
            "split": {k: int(v) for k, v in series["split"].value_counts().sort_index().items()},
        },
    }
