"""Tiny lesion sources with real files: a DeepLesion tree (16-bit PNGs storing HU + 32768, DL_info.csv)
and a CLEAR lesion CSV with its PNG slices."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

OFFSET = 32768
AIR, BODY, LESION_HU = -1000, 40, 200  # HU
DL_COLUMNS = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
              "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
              "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
              "Patient_age", "Train_Val_Test"]


def ct_slice(height: int, width: int, number: int) -> np.ndarray:
    """uint16 HU + 32768: air outside a body rectangle of 40 HU; pixel (2, 3) = the slice number in HU."""
    hu = np.full((height, width), AIR, np.int32)
    hu[4:-4, 6:-6] = BODY
    hu[2, 3] = number  # tells the slices apart
    return (hu + OFFSET).astype(np.uint16)


def save_png16(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I"), "PIL must write a 16-bit PNG"


@dataclass
class DeepLesionTree:
    root: Path
    boxes: dict[str, list[float]] = field(default_factory=dict)  # File_name -> x1, y1, x2, y2
    bad_lines: dict[int, str] = field(default_factory=dict)  # CSV line -> what is wrong


def _row(name: str, box: str, spacing: str, split: int, kind: int = -1, size: str = "64, 96") -> dict[str, object]:
    patient, study, series, key = name[:-4].split("_")
    return {"File_name": name, "Patient_index": int(patient), "Study_index": int(study), "Series_ID": int(series),
            "Key_slice_index": int(key), "Measurement_coordinates": "0, 0, 1, 1, 0, 1, 1, 0", "Bounding_boxes": box,
            "Lesion_diameters_Pixel_": "10.0, 5.0", "Normalized_lesion_location": "0.5, 0.5, 0.5",
            "Coarse_lesion_type": kind, "Possibly_noisy": 0, "Slice_range": f"{int(key) - 2}, {int(key) + 2}",
            "Spacing_mm_px_": spacing, "Image_size": size, "DICOM_windows": "-175, 275", "Patient_gender": "F",
            "Patient_age": 60, "Train_Val_Test": split}


def write_deeplesion(root: Path) -> DeepLesionTree:
    """Three series folders of two patients (one folder with a gap in its slice numbers), 5 good rows, 3 bad.

    - ``000001_01_01``: slices 108-112, 96 wide x 64 high, 0.8 x 0.8 x 2.5 mm; lesions on 110 (two) and 111.
    - ``000001_02_01``: slices 1-3 and 10-11 (two runs), 64 x 64, 0.7 x 0.7 x 5 mm; a lesion on 2.
    - ``000002_01_02``: slices 5-7, 64 x 64, 0.6 x 0.6 x 1 mm; a lesion on 6; DeepLesion test split.
    - ``000003_01_01`` is named by a row but absent (a subset), and ``000004_01_01`` has no row.
    Each lesion box is painted 200 HU in its key slice.
    """
    tree = DeepLesionTree(root)
    images = root / "Images_png"
    folders = {"000001_01_01": ((64, 96), [108, 109, 110, 111, 112]), "000001_02_01": ((64, 64), [1, 2, 3, 10, 11]),
               "000002_01_02": ((64, 64), [5, 6, 7]), "000004_01_01": ((64, 64), [1, 2])}
    good = [
        ("000001_01_01_110.png", "20.4, 30.6, 40.2, 50.8", "0.8, 0.8, 2.5", 1, 4),
        ("000001_01_01_110.png", "60, 10, 70, 20", "0.8, 0.8, 2.5", 1, 5),
        ("000001_01_01_111.png", "50, 20, 55.5, 30", "0.8, 0.8, 2.5", 1, -1),
        ("000001_02_01_002.png", "10, 12, 30, 28", "0.7, 0.7, 5", 1, -1),
        ("000002_01_02_006.png", "8, 9, 20, 40", "0.6, 0.6, 1", 3, 1),
    ]
    slices: dict[str, np.ndarray] = {}
    for folder, ((height, width), numbers) in folders.items():
        for n in numbers:
            slices[f"{folder}_{n:03d}.png"] = ct_slice(height, width, n)
    rows = []
    for name, box, spacing, split, kind in good:
        tree.boxes.setdefault(name, [])
        x1, y1, x2, y2 = (float(v) for v in box.split(","))
        tree.boxes[name].append([x1, y1, x2, y2])
        slices[name][round(y1) : round(y2) + 1, round(x1) : round(x2) + 1] = LESION_HU + OFFSET
        rows.append(_row(name, box, spacing, split, kind))
    bad = [
        (_row("000002_01_02_007.png", "50, 10, 70, 20", "0.6, 0.6, 1", 3), "outside the 64x64"),
        (_row("000001_01_01_150.png", "5, 5, 10, 10", "0.8, 0.8, 2.5", 1), "key slice 150 is not in"),
        (_row("000001_02_01_003.png", "1, 2, x, 4", "0.7, 0.7, 5", 1), "is not 4 comma-separated numbers"),
    ]
    for row, why in bad:
        rows.append(row)
        tree.bad_lines[len(rows) + 1] = why
    rows.append(_row("000003_01_01_010.png", "5, 5, 10, 10", "1, 1, 1", 2))  # folder not downloaded
    for name, array in slices.items():
        patient, study, series, number = name[:-4].split("_")
        save_png16(array, images / f"{patient}_{study}_{series}" / f"{number}.png")
    pd.DataFrame(rows, columns=DL_COLUMNS).to_csv(root / "DL_info.csv", index=False)
    return tree


def write_clear(root: Path) -> Path:
    """CLEAR's README layout: ``patient_00k/slice_00j.png`` (8-bit) and ``lesions.csv`` naming them
    ``patient_00k_slice_00j.png`` (plus one by its path), with one missing image. Returns the CSV."""
    rows = []
    for p in range(4):
        patient = f"patient_{p:03d}"
        for s in range(3):
            image = np.full((40, 48), 30, np.uint8)
            image[10:30, 10:38] = 100 + 20 * s + p
            path = root / patient / f"slice_{s:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            name = f"{patient}/slice_{s:03d}.png" if (p, s) == (3, 2) else f"{patient}_slice_{s:03d}.png"
            rows.append({"image": name, "lesion_present": int(s == 1 or p == 0), "patient_id": patient})
    rows.append({"image": "patient_009_slice_000.png", "lesion_present": 1, "patient_id": "patient_009"})
    table = root / "lesions.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table
