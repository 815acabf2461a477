"""The last step every reader shares: check the voxel values, reorient to RAS+, go channel-first."""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path

import numpy as np

from radlens.errors import InputError
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.volume import Volume

# Affine that maps LPS millimetres (DICOM, ITK) to RAS millimetres (NIfTI, radlens).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# The most voxels (all channels together) a reader accepts: 2**31, e.g. 1024 x 1024 x 2048, or a
# 128 x 128 x 72 x 1200-volume fMRI run; 8 GiB as float32. A header declaring more is refused
# before anything is allocated. Raise it here for a machine and data that need more.
MAX_VOXELS = 2**31
# Voxel spacing a reader accepts, in mm: 0.1 micron to 10 m. Outside, the affine is damaged (or its
# unit wrong), and resampling it would ask for absurd array sizes.
SPACING_RANGE_MM = (1e-4, 1e4)


def library_reason(err: BaseException | str, path: str | PathLike[str] | None, with_type: bool = False) -> str:
    """A library's error (or its message) as one line of a failure reason: the file's full path
    (which InputError already gives, and which may name a patient's folder) shortened to its name,
    whitespace and line breaks collapsed, the exception type in front when ``with_type``."""
    text = str(err)
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    text = " ".join(text.split()) or "no message"
    return f"{type(err).__name__}: {text}" if with_type and isinstance(err, BaseException) else text


def check_voxel_count(shape: tuple[int, ...], path: str | PathLike[str] | None) -> int:
    """The number of voxels of ``shape`` (exact, Python integers), or InputError when a header
    declares none or more than :data:`MAX_VOXELS`: checked before the data is read or allocated."""
    dims = [int(d) for d in shape]
    if any(d <= 0 for d in dims):
        raise InputError(path, f"the header declares an empty or negative image shape {dims}")
    count = math.prod(dims)
    if count > MAX_VOXELS:
        raise InputError(
            path, f"the header declares {count:,} voxels (shape {dims}), more than radlens reads "
                  f"(radlens.io.build.MAX_VOXELS = {MAX_VOXELS:,}): a damaged header, or raise that limit"
        )
    return count


def check_dtype(dtype: np.dtype, path: str | PathLike[str] | None) -> None:
    """Refuse voxel types that are not real numbers: complex (the magnitude or the real part would
    be a guess about what the data means) and structured types (RGB/RGBA colour)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputError(
            path, f"complex voxels ({dtype}): radlens reads real-valued images; save the magnitude "
                  "(or the real/imaginary/phase part you mean) as its own file"
        )
    if dtype.kind not in "biuf":
        raise InputError(path, f"voxel type {dtype} is not a grey value (colour or structured data)")


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
    check_dtype(data.dtype, source)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(source, "the voxel-to-world affine is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(source, "the voxel-to-world affine is singular: orientation cannot be determined")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < SPACING_RANGE_MM[0]) or np.any(spacing > SPACING_RANGE_MM[1]):
        raise InputError(source, f"voxel spacing {[float(f'{v:.4g}') for v in spacing]} mm is outside "
                                 f"{SPACING_RANGE_MM[0]:g} to {SPACING_RANGE_MM[1]:g} mm: a damaged header?")
    array = np.asarray(data).reshape(*data.shape[:3], -1)
    normal = axis_direction(affine, 2)
    try:
        ornt = nib.orientations.io_orientation(affine)
        ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape[:3])  # shape before reorienting
    except nib.orientations.OrientationError as err:  # two voxel axes along one world axis
        raise InputError(source, f"the voxel-to-world affine has no clear orientation: {library_reason(err, source)}") from None
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
