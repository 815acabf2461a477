"""A tiny 3D prepared CT dataset on disk (docs/prepared-dataset.md layout) for evaluation tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

FINDINGS = ["Cardiomegaly", "Lung nodule"]
SHAPE = [64, 64, 32]  # tiny-vit3d's input
INTENSITY = {"ct_window": [-1000.0, 1000.0], "ct_output": "hu/1000", "mri_percentiles": [0.5, 99.5], "mri_mask": "nonzero"}
NOTE = "CT: HU clipped to [-1000.0, 1000.0] -> hu/1000"
# (patient, split, reconstructions, Cardiomegaly, Lung nodule): test_p1's scan has two reconstructions.
SCANS = [
    ("test_p1", "test", 2, 1, 0), ("test_p2", "test", 1, 0, 1), ("test_p3", "test", 1, 1, 1),
    ("test_p4", "test", 1, 0, 0), ("test_p5", "test", 1, 1, 0), ("test_p6", "test", 1, 0, 1),
    ("val_p1", "validation", 1, 1, 0), ("val_p2", "validation", 1, 0, 1),
    ("val_p3", "validation", 1, 1, 1), ("val_p4", "validation", 1, 0, 0),
    ("train_p1", "train", 1, 1, 0),
]


def preprocessing() -> dict:
    """The bundle preprocessing section (radlens.train.clip format) matching this dataset."""
    spatial = {"target_spacing": [1.5, 1.5, 3.0], "shape": SHAPE, "shape_mode": "crop_pad", "pad_value": -1024.0}
    return {"dims": 3, "modality": "CT", "array_shape": SHAPE, "dtype": "float32", "intensity": NOTE,
            "prepare": {"spatial": spatial, "intensity": INTENSITY, "already_hu": "yes"}}


def write_prepared(out: Path, seed: int = 0, splits: tuple[str, ...] = ("train", "validation", "test")) -> Path:
    """Write the dataset: one random (1, 64, 64, 32) array per reconstruction; returns ``out``."""
    rng = np.random.default_rng(seed)
    (out / "arrays").mkdir(parents=True)
    rows = []
    for patient, split, n_recon, *labels in SCANS:
        if split not in splits:
            continue
        for r in range(n_recon):
            series_id = f"{patient}_a_{r + 1}"
            np.save(out / "arrays" / f"{series_id}.npy", rng.normal(0, 0.3, (1, *SHAPE)).astype(np.float32))
            rows.append({"series_id": series_id, "patient_id": patient, "study_id": f"{patient}_a",
                         "scan_id": f"{patient}_a", "array_path": f"arrays/{series_id}.npy", "modality": "CT",
                         "split": split, "text": "report", **dict(zip(FINDINGS, labels))})
    series = pd.DataFrame(rows)
    for name in FINDINGS:
        series[name] = series[name].astype("int8")
    series.to_parquet(out / "series.parquet", index=False)
    card = {"radlens_version": "0.1.0", "dims": 3, "modality": "CT", "array_shape": SHAPE, "dtype": "float32",
            "intensity": NOTE, "findings": FINDINGS, "label_names": {},
            "config": {"intensity": INTENSITY, "spatial": preprocessing()["prepare"]["spatial"]},
            "counts": {"series": len(series), "split": series["split"].value_counts().to_dict()}}
    (out / "dataset.json").write_text(json.dumps(card))
    return out


@functools.lru_cache(maxsize=1)
def tiny_model():
    """One tiny-vit3d CLIP model per test session (random weights, eval mode)."""
    import torch

    from radlens.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("tiny-vit3d", texts=[f"{f} is present." for f in FINDINGS] * 4).eval()
    model.preprocessing = preprocessing()
    return model


def write_bundle(folder: Path, **changes) -> Path:
    """Save the tiny model as a bundle whose preprocessing is this dataset's, with ``changes`` applied."""
    from radlens.models.bundle import save_bundle

    return save_bundle(tiny_model(), folder, {**preprocessing(), **changes})
