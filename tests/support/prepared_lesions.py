"""A tiny prepared 2D CT dataset with lesion boxes, written by hand (docs/prepared-dataset.md).

Each patient has one axial series of ``slices_per_series`` slices: a soft-tissue disc (40 HU)
with two dark lungs (-800 HU), stored as ``hu/1000`` of the window [-1000, 1000]. Every other
slice carries a bright round lesion (+200 HU) at a random place, with its label-1 box in the slices
table (``boxes``, ``labels_present`` [1], ``lesion`` 1); some lesion slices also have a label-2
box (a second, "other" structure) to test label choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

WINDOW = (-1000.0, 1000.0)


def _slice(shape: tuple[int, int], lesion: tuple[int, int, int] | None, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    h, w = shape
    hu = np.full(shape, -1000.0)
    hu[((rows - h / 2) / (0.45 * h)) ** 2 + ((cols - w / 2) / (0.45 * w)) ** 2 < 1] = 40.0
    for side in (-1, 1):
        hu[((rows - h / 2) / (0.25 * h)) ** 2 + ((cols - w / 2 - side * 0.2 * w) / (0.12 * w)) ** 2 < 1] = -800.0
    if lesion is not None:
        r, c, radius = lesion
        hu[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 200.0
    hu += rng.normal(0, 20, shape)
    return (np.clip(hu, *WINDOW) / 1000.0).astype(np.float32)


def write_lesion_prepared(out: Path, shape: tuple[int, int] = (32, 32), patients: dict[str, int] | None = None,
                          slices_per_series: int = 6, seed: int = 0) -> Path:
    """Write the folder; ``patients`` maps split -> number of patients (one series each)."""
    patients = patients or {"train": 6, "validation": 2}
    rng = np.random.default_rng(seed)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    series_rows, slice_rows = [], []
    pid = 0
    for split, n in patients.items():
        for _ in range(n):
            pid += 1
            sid = f"ct-{pid:03d}"
            array_path = f"arrays/{sid}.npy"
            stack = []
            for k in range(slices_per_series):
                boxes: dict[str, list[int]] = {}
                lesion = None
                if k % 2 == 1:
                    radius = int(rng.integers(2, 4))
                    r = int(rng.integers(radius + 4, shape[0] - radius - 4))
                    c = int(rng.integers(radius + 4, shape[1] - radius - 4))
                    lesion = (r, c, radius)
                    boxes["1"] = [r - radius, c - radius, r + radius + 1, c + radius + 1]
                    if k % 4 == 3:
                        boxes["2"] = [0, 0, 4, 4]
                stack.append(_slice(shape, lesion, rng))
                slice_rows.append({
                    "slice_id": f"{sid}:{k}", "series_id": sid, "patient_id": f"pt-{pid:03d}", "array_path": array_path,
                    "row": k, "slice_index": k, "position": float(k), "plane": "axial", "split": split, "text": "",
                    "label": -1, "foreground": 0.8, "lesion": int(bool(boxes)), "mask_path": "",
                    "labels_present": sorted(int(x) for x in boxes), "boxes": json.dumps(boxes) if boxes else "{}",
                })
            np.save(out / array_path, np.stack(stack))
            series_rows.append({
                "series_id": sid, "patient_id": f"pt-{pid:03d}", "study_id": f"st-{pid:03d}", "source_path": f"{sid}.nii.gz",
                "array_path": array_path, "modality": "CT", "plane": "axial", "split": split, "fold": -1, "text": "",
                "label": -1,
            })
    pd.DataFrame(series_rows).to_parquet(out / "series.parquet", index=False)
    pd.DataFrame(slice_rows).to_parquet(out / "slices.parquet", index=False)
    card = {
        "radlens_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "source": {"kind": "synthetic", "path": "/"},
        "config": {"dims": 2, "intensity": {"ct_window": list(WINDOW), "ct_output": "hu/1000",
                                            "mri_percentiles": [0.5, 99.5], "mri_mask": "nonzero"}},
        "dims": 2, "modality": "CT", "array_shape": list(shape), "dtype": "float32",
        "intensity": f"CT: HU clipped to {list(WINDOW)} -> hu/1000", "findings": [], "label_names": {},
        "labels": {"0": "background", "1": "lesion", "2": "other"},
        "counts": {"patients": pid, "series": len(series_rows), "slices": len(slice_rows), "failures": 0},
    }
    (out / "dataset.json").write_text(json.dumps(card))
    return out
