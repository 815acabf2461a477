"""A tiny prepared dataset folder written by hand, following docs/prepared-dataset.md.

Two (or more) "protocols" whose images differ visibly (a bright disc vs. stripes, ...) and
whose captions differ in TE/TR, so a tiny CLIP can learn the pairing in a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

PROTOCOLS = [
    {"plane": "axial", "EchoTime": 0.01, "RepetitionTime": 0.5, "SeriesDescription": "t1_se"},
    {"plane": "axial", "EchoTime": 0.1, "RepetitionTime": 4.0, "SeriesDescription": "t2_tse"},
    {"plane": "axial", "EchoTime": 0.12, "RepetitionTime": 9.0, "SeriesDescription": "flair"},
]


def _pattern(protocol: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    if protocol == 0:
        img = (r < 0.6).astype(np.float32)
    elif protocol == 1:
        img = (np.sin(grids[0] * 12) > 0).astype(np.float32)
    else:
        img = np.clip(1 - r, 0, 1).astype(np.float32)
    return img + rng.normal(0, 0.05, img.shape).astype(np.float32)


def caption(p: dict) -> str:
    return (
        f"A brain MRI, plane {p['plane']}, Acquisition (Description): ({p['SeriesDescription']}), "
        f"Imaging Parameters (Echo Time, Repetition Time): ({p['EchoTime']}, {p['RepetitionTime']})"
    )


def write_prepared(
    out: Path,
    dims: int = 2,
    shape: tuple[int, ...] = (64, 64),
    patients: dict[str, int] | None = None,
    n_protocols: int = 2,
    slices_per_series: int = 4,
    seed: int = 0,
) -> Path:
    """Write the folder; ``patients`` maps split -> number of patients (each has one series per protocol)."""
    patients = patients or {"train": 8, "validation": 2, "test": 2}
    rng = np.random.default_rng(seed)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    series_rows, slice_rows = [], []
    pid = 0
    for split, n in patients.items():
        for _ in range(n):
            pid += 1
            for k in range(n_protocols):
                p = PROTOCOLS[k]
                sid = f"sub-{pid:03d}_p{k}"
                array_path = f"arrays/{sid}.npy"
                if dims == 2:
                    arr = np.stack([_pattern(k, shape, rng) for _ in range(slices_per_series)])
                else:
                    arr = _pattern(k, shape, rng)[None]
                np.save(out / array_path, arr)
                series_rows.append({
                    "series_id": sid, "patient_id": f"sub-{pid:03d}", "study_id": f"sub-{pid:03d}",
                    "source_path": f"{sid}.nii.gz", "array_path": array_path, "modality": "MR", "plane": p["plane"],
                    "split": split, "fold": -1, "text": caption(p), "label": k,
                    "EchoTime": p["EchoTime"], "RepetitionTime": p["RepetitionTime"], "InversionTime": np.nan,
                    "SeriesDescription": p["SeriesDescription"], "TE_bin": int(p["EchoTime"] * 100) // 5,
                    "TR_bin": int(p["RepetitionTime"] * 2), "scan_id": sid,
                    "report_findings": f"findings of protocol {p['SeriesDescription']}",
                })
                for r in range(slices_per_series if dims == 2 else 0):
                    slice_rows.append({
                        "slice_id": f"{sid}:{r}", "series_id": sid, "patient_id": f"sub-{pid:03d}",
                        "array_path": array_path, "row": r, "slice_index": r, "position": r / slices_per_series,
                        "plane": p["plane"], "split": split, "text": caption(p), "label": k,
                        "foreground": 0.5, "lesion": -1,
                    })
    series = pd.DataFrame(series_rows)
    series.to_parquet(out / "series.parquet", index=False)
    if dims == 2:
        pd.DataFrame(slice_rows).to_parquet(out / "slices.parquet", index=False)
    card = {
        "radlens_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "source": {"kind": "synthetic", "path": "/"},
        "config": {"dims": dims, "caption": {"template": "A {anatomy} MRI, plane {plane}, TE {EchoTime}, TR {RepetitionTime}",
                                             "anatomy": "brain", "time_unit": "s", "decimals": 4}},
        "dims": dims, "modality": "MR", "array_shape": list(shape), "dtype": "float32",
        "intensity": "synthetic [0, 1]", "findings": [],
        "label_names": {str(k): PROTOCOLS[k]["SeriesDescription"] for k in range(n_protocols)},
        "counts": {"patients": pid, "series": len(series), "slices": len(slice_rows), "failures": 0,
                   "split": series["split"].value_counts().to_dict()},
    }
    (out / "dataset.json").write_text(json.dumps(card))
    return out


def quick_trainer(**changes):
    """A TrainerConfig of a few steps with validation and checkpoints, for fast tests."""
    from radlens.train.config import TrainerConfig

    base = dict(max_steps=4, val_every_n_steps=4, checkpoint_every_n_steps=2, progress_bar=False, log_every_n_steps=1)
    return TrainerConfig(**{**base, **changes})
