"""CT-RATE's on-disk layout for the CT phantom: names, folders, stored values, CSV tables.

Volumes: ``{split}/{split}_{p}/{split}_{p}_{scan}/{split}_{p}_{scan}_{recon}.nii.gz`` with
``split`` in ``train``/``valid``; masks mirror that under ``masks/`` as ``{name}_mask.nii.gz``
(the suffix keeps a recursive ``*.nii.gz`` search for volumes from picking up masks). Tables sit at the top:
``train_reports.csv``/``validation_reports.csv``, ``train_predicted_labels.csv``/
``valid_predicted_labels.csv``, ``train_metadata.csv``/``validation_metadata.csv``, ``lesions.csv``.

Stored values (the CT-RATE trap, made explicit): a *raw* volume holds
``(HU - RescaleIntercept) / RescaleSlope`` as int16 with the NIfTI ``scl_slope``/``scl_inter``
left at 1/0, so only the metadata table's RescaleSlope/RescaleIntercept recover HU. A volume
with ``StoredAsHU == True`` already holds HU, although its metadata row still carries the
scanner's RescaleIntercept (-1024 or -8192) as CT-RATE's re-released volumes do: applying it
again is wrong. Slope is always 1, so HU -1024..3071 fit int16 with either intercept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from radlens.phantoms.ct_findings import FINDINGS

SPLIT_TABLES = {
    "train": ("train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv"),
    "valid": ("validation_reports.csv", "valid_predicted_labels.csv", "validation_metadata.csv"),
}
REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
METADATA_COLUMNS = [
    "VolumeName", "Manufacturer", "ManufacturerModelName", "SeriesDescription", "PatientSex", "PatientAge",
    "ReconstructionDiameter", "XRayTubeCurrent", "KVP", "ConvolutionKernel", "PatientPosition", "SliceThickness",
    "SpiralPitchFactor", "CTDIvol", "ImageOrientationPatient", "Rows", "Columns", "XYSpacing", "RescaleIntercept",
    "RescaleSlope", "RescaleType", "NumberofSlices", "ZSpacing", "StoredAsHU",
]
LESION_COLUMNS = ["VolumeName", "slice_index", "lesion", "findings"]
HU_RANGE = (-1024, 3071)


def volume_name(split: str, patient: int, scan: str, recon: int) -> str:
    return f"{split}_{patient}_{scan}_{recon}"


def volume_relpath(name: str) -> Path:
    """``train_12_a_1`` -> ``train/train_12/train_12_a/train_12_a_1.nii.gz``."""
    split, patient, scan, _ = name.split("_")
    return Path(split) / f"{split}_{patient}" / f"{split}_{patient}_{scan}" / f"{name}.nii.gz"


def mask_relpath(name: str) -> Path:
    """``train_12_a_1`` -> ``masks/train/train_12/train_12_a/train_12_a_1_mask.nii.gz``."""
    rel = volume_relpath(name)
    return Path("masks") / rel.parent / f"{name}_mask.nii.gz"


def encode(hu: np.ndarray, slope: float, intercept: float, stored_as_hu: bool) -> np.ndarray:
    """HU (float) -> the int16 values stored in the file."""
    hu = np.clip(np.rint(hu), *HU_RANGE)
    raw = hu if stored_as_hu else np.rint((hu - intercept) / slope)
    return raw.astype(np.int16)


def decode(stored: np.ndarray, slope: float, intercept: float, stored_as_hu: bool) -> np.ndarray:
    """The stored values of a volume -> HU, following its metadata row."""
    stored = np.asarray(stored, np.float32)
    return stored if stored_as_hu else stored * np.float32(slope) + np.float32(intercept)


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Save an integer volume with ``scl_slope``/``scl_inter`` = 1/0 (no header scaling)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header.set_xyzt_units("mm")
    return atomic_write(path, lambda tmp: nib.save(img, tmp))


def write_csv(frame: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_tables(out: Path, rows: list[dict[str, Any]], lesions: list[dict[str, Any]]) -> None:
    """Reports, labels and metadata CSVs per split, plus ``lesions.csv``."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for split, (reports, labels, metadata) in SPLIT_TABLES.items():
        part = frame[frame["split"] == split]
        write_csv(part[REPORT_COLUMNS], out / reports)
        write_csv(part[["VolumeName", *FINDINGS]].astype({f: int for f in FINDINGS}), out / labels)
        write_csv(part[METADATA_COLUMNS], out / metadata)
    write_csv(pd.DataFrame(lesions, columns=LESION_COLUMNS), out / "lesions.csv")
