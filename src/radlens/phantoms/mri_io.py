"""Atomic, byte-deterministic writers for phantom outputs (NIfTI, JSON, CSV, raw bytes).

Every file is written to a temporary name in its folder and renamed, so an interrupted run never
leaves a half-written file that looks finished. NIfTI files are gzipped with a zero timestamp so the
same seed gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from radlens.common.atomic import write_bytes_atomic


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """A ``.nii.gz`` with sform and qform set to ``affine`` (scanner-like), gzipped deterministically."""
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    return write_bytes_atomic(path, gzip.compress(image.to_bytes(), compresslevel=3, mtime=0))


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def write_csv(path: Path, frame: Any) -> Path:
    """Write a pandas DataFrame as CSV (no index)."""
    return write_bytes_atomic(path, frame.to_csv(index=False).encode())
