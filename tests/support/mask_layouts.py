"""Tiny BIDS trees whose images come with label maps (bright cubes labelled in a mask), for the mask tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from support.layouts import SIDECAR

BRIGHT = 500.0  # label 1's cube: the only voxels above BRIGHT / 2
DIM = 100.0  # labels 2 and 5
BODY = 10.0
LABELS = {0: "background", 1: "tumour", 2: "edema", 5: "cyst"}


def cube_volume(shape: tuple[int, int, int] = (20, 16, 10), shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image, label map): a body box of value 10 on zeros, a bright cube (label 1), two dim cubes (2, 5).

    ``shift`` moves the bright cube along X, so subjects differ.
    """
    image = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    image[1:-1, 1:-1, :] = BODY
    x0 = 3 + shift
    image[x0 : x0 + 5, 5:11, 3:7] = BRIGHT
    mask[x0 : x0 + 5, 5:11, 3:7] = 1
    image[12:17, 2:6, 2:5] = DIM
    mask[12:17, 2:6, 2:5] = 2
    image[12:15, 11:14, 6:9] = DIM
    mask[12:15, 11:14, 6:9] = 5
    return image, mask


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def write_mask_bids(
    root: Path,
    subjects: int = 2,
    spacing: tuple[float, float, float] = (1.0, 1.5, 3.0),
    table: dict[int, str] | None = LABELS,
) -> list[tuple[Path, Path]]:
    """``sub-XX/anat/sub-XX_T1w.nii.gz`` + sidecar + ``sub-XX_T1w_dseg.nii.gz`` (+ ``_dseg.tsv`` from ``table``).

    Returns (image, label map) paths.
    """
    affine = np.diag([*spacing, 1.0])
    out = []
    for s in range(subjects):
        folder = root / f"sub-{s:02d}" / "anat"
        image, mask = cube_volume(shift=s % 3)
        stem = f"sub-{s:02d}_T1w"
        img = save(image, affine, folder / f"{stem}.nii.gz")
        (folder / f"{stem}.json").write_text(json.dumps({**SIDECAR, "EchoTime": 0.003, "SeriesDescription": "T1w"}))
        seg = save(mask, affine, folder / f"{stem}_dseg.nii.gz")
        if table is not None:
            rows = "".join(f"{i}\t{n}\n" for i, n in table.items())
            (folder / f"{stem}_dseg.tsv").write_text("index\tname\n" + rows)
        out.append((img, seg))
    return out
