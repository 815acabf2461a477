"""A tiny prepared 2D brain-MRI dataset for the generative pipeline, written by hand (docs/prepared-dataset.md).

Every patient has one anatomy (a head of nested ellipses: CSF rim and ventricles, grey matter, white
matter, and on some slices a lesion) imaged twice, as a T1-weighted and a T2-weighted axial series,
with the tissue label map of each series in ``masks/`` (labels background/CSF/GM/WM/lesion, as the
MRI phantom's ``_dseg`` maps). Intensities follow the contrast: T1w WM > GM > CSF, T2w CSF > GM > WM,
so a model conditioned on the contrast has something to learn. Values lie in [0, 1] like a prepared MRI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from radlens.prepare.masks import label_boxes

LABELS = {0: "background", 1: "CSF", 2: "GM", 3: "WM", 4: "lesion"}
# Contrast -> (mean value per label id 0..4, TE s, TR s).
CONTRASTS = {
    "T1w": ((0.0, 0.15, 0.5, 0.8, 0.35), 0.012, 0.5),
    "T2w": ((0.0, 0.95, 0.6, 0.35, 0.85), 0.1, 4.5),
}


def anatomy(shape: tuple[int, int], rng: np.random.Generator, lesion: bool) -> np.ndarray:
    """A label map: nested ellipses (CSF rim 1, GM 2, WM 3), two ventricles (1), optionally a lesion (4)."""
    h, w = shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    cy, cx = h / 2 + rng.uniform(-1, 1), w / 2 + rng.uniform(-1, 1)
    ry, rx = 0.44 * h * rng.uniform(0.92, 1.0), 0.38 * w * rng.uniform(0.92, 1.0)
    r = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2
    labels = np.zeros(shape, np.uint8)
    labels[r < 1.0] = 1
    labels[r < 0.8] = 2
    labels[r < 0.45] = 3
    for side in (-1, 1):
        labels[((rows - cy) / (0.12 * h)) ** 2 + ((cols - cx - side * 0.08 * w) / (0.04 * w)) ** 2 < 1] = 1
    if lesion:
        y, x = cy + rng.uniform(-0.15, 0.15) * h, cx + rng.choice([-1, 1]) * 0.22 * w
        labels[(rows - y) ** 2 + (cols - x) ** 2 <= (0.06 * h) ** 2] = 4
    return labels


def write_generation_prepared(out: Path, shape: tuple[int, int] = (32, 32), patients: dict[str, int] | None = None,
                              slices_per_series: int = 4, seed: int = 0) -> Path:
    """Write the folder; ``patients`` maps split -> number of patients (a T1w and a T2w series each)."""
    patients = patients or {"train": 4, "validation": 1, "test": 1}
    rng = np.random.default_rng(seed)
    for sub in ("arrays", "masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    series_rows, slice_rows = [], []
    pid = 0
    for split, n in patients.items():
        for _ in range(n):
            pid += 1
            patient = f"sub-{pid:03d}"
            maps = np.stack([anatomy(shape, rng, lesion=k % 2 == 1) for k in range(slices_per_series)])
            for contrast, (means, te, tr) in CONTRASTS.items():
                sid = f"{patient}_{contrast}"
                image = np.asarray(means, np.float32)[maps] + rng.normal(0, 0.02, maps.shape).astype(np.float32)
                np.save(out / f"arrays/{sid}.npy", np.clip(image, 0, 1).astype(np.float32))
                np.save(out / f"masks/{sid}.npy", maps)
                all_boxes = label_boxes(maps)
                series_rows.append({
                    "series_id": sid, "patient_id": patient, "study_id": patient, "scan_id": sid,
                    "source_path": f"{sid}.nii.gz", "array_path": f"arrays/{sid}.npy", "mask_path": f"masks/{sid}.npy",
                    "modality": "MR", "plane": "axial", "split": split, "fold": -1, "text": "", "label": -1,
                    "labels_present": sorted(all_boxes), "boxes": json.dumps({str(k): v for k, v in all_boxes.items()}),
                    "EchoTime": te, "RepetitionTime": tr, "InversionTime": np.nan, "FlipAngle": 90.0,
                    "BodyPartExamined": None, "contrast": contrast, "n_slices": slices_per_series,
                })
                for k in range(slices_per_series):
                    boxes = label_boxes(maps[k])
                    slice_rows.append({
                        "slice_id": f"{sid}:{k}", "series_id": sid, "patient_id": patient, "array_path": f"arrays/{sid}.npy",
                        "row": k, "slice_index": k, "position": k / slices_per_series, "plane": "axial", "split": split,
                        "text": "", "label": -1, "foreground": float((maps[k] > 0).mean()), "lesion": int(4 in boxes),
                        "mask_path": f"masks/{sid}.npy", "labels_present": sorted(boxes),
                        "boxes": json.dumps({str(b): v for b, v in boxes.items()}),
                    })
    pd.DataFrame(series_rows).to_parquet(out / "series.parquet", index=False)
    pd.DataFrame(slice_rows).to_parquet(out / "slices.parquet", index=False)
    card = {
        "radlens_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "source": {"kind": "synthetic", "path": "/"},
        "config": {"dims": 2, "caption": {"anatomy": "brain"},
                   "intensity": {"mri_percentiles": [0.5, 99.5], "mri_mask": "nonzero"}},
        "dims": 2, "modality": "MR", "array_shape": list(shape), "dtype": "float32",
        "intensity": "MRI: percentiles (0.5, 99.5) of the nonzero voxels per volume -> [0, 1]", "findings": [],
        "label_names": {}, "labels": {str(k): v for k, v in LABELS.items()},
        "counts": {"patients": pid, "series": len(series_rows), "slices": len(slice_rows), "failures": 0},
    }
    (out / "dataset.json").write_text(json.dumps(card))
    return out
