"""The last step every reader shares: check the voxel values, reorient to RAS+, go channel-first."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from radlens.errors import InputError
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.volume import Volume

# Affine that maps LPS millimetres (DICOM, ITK) to RAS millimetres (NIfTI, radlens).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axis_direction(affine: np.ndarray, axis: int = 2) -> np.ndarray:
    """Unit world vector of one voxel axis of ``affine`` (the stored slice axis by default)."""
    column = np.asarray(affine, dtype=np.float64)[:3, axis]
    norm = float(np.linalg.norm(column))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError(f"voxel axis {axis} of the affine has no direction: {column}")
    return column / norm


def check_finite(array: np.ndarray, path: str | PathLike[str] | None) -> None:
    """Refuse arrays with NaN/inf values, saying how many."""
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(path, f"{bad} of {array.size} voxels are NaN or infinite")


def check_values(array: np.ndarray, path: str | PathLike[str] | None) -> None:
    """Refuse volumes with NaN/inf voxels (with their count) or no signal at all."""
    check_finite(array, path)
    if not np.any(array):
        raise InputError(path, "every voxel is zero")


def _volume_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a :class:`Volume` holds for data stored as ``dtype``: integers keep their type
    (in native byte order, which torch needs), everything else becomes float32."""
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("=") if np.issubdtype(dtype, np.integer) else np.dtype(np.float32)


def build_volume(
    data: np.ndarray,
    affine: np.ndarray,
    *,
    source: str | PathLike[str] | None,
    metadata: AcquisitionMetadata | None = None,
    hu: bool = False,
    allow_empty: bool = False,
) -> Volume:
    """A RAS+ channel-first :class:`Volume` from spatial-first ``data`` ``(X, Y, Z[, C...])``.

    ``affine`` maps ``data``'s voxels to RAS mm. Trailing axes after the third become one
    channel axis. The voxel axes are permuted/flipped to the closest RAS+ order with
    nibabel's orientation tools (the affine follows); ``slice_normal`` is taken from the
    stored third axis before that. Integer data keeps its dtype, anything else becomes
    float32; readers that apply a scaling pass float32 already.

    The flips and transposes are views; at most one copy is made, and only when needed for
    the contract of :class:`Volume` (positive strides, native byte order, writeable memory):
    the array keeps the memory order of ``data`` (Fortran order for NIfTI) rather than being
    made C-contiguous, which would be a second full copy of the volume.
    ``allow_empty`` accepts an all-zero array (a label map with nothing marked), never NaN/inf.
    """
    import nibabel as nib

    if data.ndim < 3:
        raise InputError(source, f"expected at least 3 axes, got shape {data.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(source, "the voxel-to-world affine is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(source, "the voxel-to-world affine is singular: orientation cannot be determined")
    array = np.asarray(data).reshape(*data.shape[:3], -1)
    normal = axis_direction(affine, 2)
    ornt = nib.orientations.io_orientation(affine)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape[:3])  # shape before reorienting
    array = np.moveaxis(nib.orientations.apply_orientation(array, ornt), -1, 0)
    dtype = _volume_dtype(array.dtype)
    # A read-only input (a memory-mapped source file) is copied so the volume never aliases it.
    if array.dtype != dtype or min(array.strides) < 0 or not array.flags.writeable:
        array = np.array(array, dtype=dtype, order="K")  # "K": positive strides, same memory order
    if allow_empty:
        check_finite(array, source)
    else:
        check_values(array, source)
    return Volume(
        array=array,
        affine=ras_affine,
        metadata=metadata if metadata is not None else AcquisitionMetadata(),
        source=Path(source) if source is not None else None,
        hu=hu,
        slice_normal=normal,
    )
