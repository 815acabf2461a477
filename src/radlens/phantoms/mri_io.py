"""Atomic, byte-deterministic writers for phantom outputs (NIfTI, JSON, CSV, raw bytes).

Every file is written to a temporary name in its folder and renamed, so an interrupted run never
leaves a half-written file that looks finished. NIfTI files are gzipped with a zero timestamp so the
same seed gives the same bytes.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """A ``.nii.gz`` with sform and qform set to ``affine`` (scanner-like), gzipped deterministically."""
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    return atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=3, mtime=0))


def write_json(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def write_csv(path: Path, frame: Any) -> Path:
    """Write a pandas DataFrame as CSV (no index)."""
    return atomic_write_bytes(path, frame.to_csv(index=False).encode())
