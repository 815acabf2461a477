"""NIfTI (and other nibabel formats: MGH/MGZ) to :class:`Volume`, and atomic NIfTI writing."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from radlens.errors import InputError
from radlens.io.build import LPS_TO_RAS, build_volume, check_dtype, check_voxel_count, library_reason
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.sidecar import read_sidecar, sidecar_path
from radlens.io.volume import Volume


def _header_scaling(img: object) -> tuple[float, float]:
    """(slope, intercept) nibabel applies when reading; (1, 0) when the header has none."""
    slope = getattr(img.dataobj, "slope", 1.0)  # type: ignore[attr-defined]
    inter = getattr(img.dataobj, "inter", 0.0)  # type: ignore[attr-defined]
    slope = 1.0 if slope is None or not np.isfinite(slope) else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return slope, inter


# NIfTI spatial units (the low 3 bits of xyzt_units) other than millimetres: name, factor to mm.
SPATIAL_UNITS_TO_MM = {1: ("metre", 1000.0), 3: ("micron", 0.001)}
# The most a deflate stream (gzip: .nii.gz, .mgz) can expand: 1032 to 1 (zlib's technical notes).
# A compressed file cannot hold more voxel bytes than this times its size.
DEFLATE_MAX_RATIO = 1032


def _nibabel_errors() -> tuple[type[BaseException], ...]:
    """What nibabel, gzip and zlib raise on damaged files, caught around the nibabel calls only:
    ImageFileError (not a NIfTI/MGH file), HeaderDataError (a header nibabel cannot use; both seen
    in ``tests/io/test_fuzz.py``), EOFError/zlib.error/OSError (truncated or corrupt gzip),
    ValueError (data shorter than declared), struct.error (a short header)."""
    import nibabel as nib

    return (
        nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError,
        EOFError, zlib.error, OSError, ValueError, struct.error,
    )


def _open(path: Path) -> Any:
    """The nibabel image (header parsed, no voxel data read), or InputError."""
    import nibabel as nib
    from nibabel.imageglobals import LoggingOutputSuppressor

    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        with LoggingOutputSuppressor():  # nibabel logs the header fixes it makes; _check_header refuses them
            return nib.load(path, mmap=False)
    except _nibabel_errors() as err:
        raise InputError(path, f"cannot read as NIfTI (truncated or corrupt?): {library_reason(err, path)}") from None


def _raw_header(img: Any, path: Path) -> Any:
    """The NIfTI header as stored, before nibabel's fixes (which turn a zero pixdim into 1 mm)."""
    import nibabel as nib

    try:
        with nib.openers.ImageOpener(path) as handle:
            return type(img.header).from_fileobj(handle, check=False)
    except _nibabel_errors() as err:
        raise InputError(path, f"cannot read as NIfTI (header corrupt?): {library_reason(err, path)}") from None


def _check_header(img: Any, path: Path) -> None:
    """Refuse headers whose geometry or voxel type radlens would otherwise have to guess:
    no qform/sform (nibabel falls back to an Analyze-style affine), a voxel size that is zero,
    negative or not finite (nibabel makes it 1 mm or its absolute value), voxel data said to
    start inside the header (nibabel reads the header bytes as voxels), and voxel types that are
    not real numbers."""
    import nibabel as nib

    check_dtype(img.get_data_dtype(), path)
    if isinstance(img, nib.Nifti1Image):  # also NIfTI-2
        raw = _raw_header(img, path)
        spatial = max(1, min(int(raw["dim"][0]), 3))
        pixdim = [float(v) for v in raw["pixdim"][1 : 1 + spatial]]
        if not all(math.isfinite(v) and v > 0 for v in pixdim):
            raise InputError(path, f"voxel size pixdim[1:{1 + spatial}] = {pixdim} mm: each must be a positive number")
        offset, first = float(raw["vox_offset"]), type(raw).single_vox_offset
        if raw.is_single and not offset >= first:  # nibabel would read the header bytes as voxels
            raise InputError(path, f"vox_offset {offset:g}: the voxel data cannot start inside the header (at least {first})")
        if int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 0:
            codes = f"qform_code {int(raw['qform_code'])}, sform_code {int(raw['sform_code'])}"
            raise InputError(
                path, f"no valid qform or sform ({codes}): the header does not say how the voxels lie "
                      "in the patient, so the orientation cannot be determined"
            )
    elif isinstance(img, nib.MGHImage):
        delta = [float(v) for v in img.header["delta"]]
        if not all(math.isfinite(v) and v > 0 for v in delta):
            raise InputError(path, f"voxel size (delta) {delta} mm: each must be a positive number")


def _check_declared_size(img: Any, path: Path) -> None:
    """Refuse a header that declares more voxel data than the file can hold, before allocating it.

    Uncompressed: the data must fit between the header's offset and the end of the file.
    gzip-compressed: at most :data:`DEFLATE_MAX_RATIO` bytes per byte of file. Either way at
    most :data:`radlens.io.build.MAX_VOXELS` voxels.
    """
    proxy = img.dataobj
    shape = tuple(int(d) for d in proxy.shape)
    needed = int(getattr(proxy, "offset", 0)) + math.prod(max(d, 0) for d in shape) * np.dtype(proxy.dtype).itemsize
    size = path.stat().st_size
    compressed = path.name.lower().endswith((".gz", ".mgz"))
    capacity = size * DEFLATE_MAX_RATIO if compressed else size
    if needed > capacity:
        what = f"a gzip file of {size:,} bytes can hold at most {capacity:,}" if compressed else f"the file holds only {size:,}"
        raise InputError(
            path, f"the header declares {needed:,} bytes (shape {list(shape)}, {proxy.dtype}) but {what}: "
                  "truncated file or damaged header"
        )
    check_voxel_count(shape, path)


def _load(path: Path) -> tuple[np.ndarray, Any, tuple[float, float]]:
    """Voxel data (at least 3 axes), the nibabel image and its header scaling, or a clear InputError.

    The header is checked first (:func:`_check_header`, :func:`_check_declared_size`), so a
    damaged header is refused before any voxel memory is allocated. Without header scaling the
    data is the stored array (e.g. int16 CT), read once and kept in its dtype; with scaling
    nibabel applies it and returns float32. The file is read into memory (no memory map), so
    the volume never depends on the file staying unchanged.
    """
    img = _open(path)
    _check_header(img, path)
    _check_declared_size(img, path)
    try:
        scaling = _header_scaling(img)
        scaled = scaling != (1.0, 0.0)
        data = np.asarray(img.dataobj, dtype=np.float32) if scaled else np.asanyarray(img.dataobj)
    except _nibabel_errors() as err:
        raise InputError(path, f"cannot read as NIfTI (voxel data truncated or corrupt?): {library_reason(err, path)}") from None
    return (data[:, :, None] if data.ndim == 2 else data), img, scaling


def _affine_mm(img: Any) -> tuple[np.ndarray, str | None]:
    """The image's affine in millimetres, and a note when the header's spatial unit (NIfTI
    ``xyzt_units``) is metres or microns and the affine was scaled, as ITK reads such files.
    Unknown units are millimetres (nibabel, FSL)."""
    import nibabel as nib

    affine = np.array(img.affine, dtype=np.float64)
    if isinstance(img, nib.Nifti1Image):
        code = int(img.header["xyzt_units"]) & 0x07
        if code in SPATIAL_UNITS_TO_MM:
            unit, scale = SPATIAL_UNITS_TO_MM[code]
            affine[:3, :] *= scale
            return affine, f"{unit} (xyzt_units): the affine was scaled by {scale:g} to millimetres"
    return affine, None


def read_mask(path: str | PathLike[str]) -> Volume:
    """Read a NIfTI label map (lesion or segmentation mask) in RAS+, keeping its integer labels
    dtype; an empty mask is allowed."""
    path = Path(path)
    data, img, _ = _load(path)
    return build_volume(data, _affine_mm(img)[0], source=path, allow_empty=True)


def read_nifti(path: str | PathLike[str]) -> Volume:
    """Read a NIfTI file into a RAS+ channel-first :class:`Volume`.

    A 4D file's fourth axis (and any later axis) becomes channels; a 2D file becomes
    ``(C, X, Y, 1)``. nibabel applies the header's ``scl_slope``/``scl_inter`` (values become
    float32); without scaling the stored integer dtype is kept (int16 CT stays int16, half the
    memory of float32). The values used are recorded in ``metadata.extra["header_scaling"]``
    with ``applied`` telling whether they changed the stored values; a header in metres or
    microns is scaled to millimetres (``extra["spatial_unit"]``). Metadata comes from a
    JSON sidecar of the same stem when there is one; a CT sidecar (dcm2niix stores the rescale
    in the header) marks the volume HU. The acquisition's slice direction is the stored third
    axis, unless the sidecar keeps dcm2niix's ``ImageOrientationPatientDICOM``: then it comes
    from there, so a file reoriented by a tool (which moves the slice axis) keeps its plane.
    """
    path = Path(path)
    data, img, (slope, inter) = _load(path)
    side = sidecar_path(path)
    metadata = read_sidecar(side) if side.is_file() else AcquisitionMetadata()
    scaling = {"slope": slope, "intercept": inter, "applied": (slope, inter) != (1.0, 0.0)}
    affine, unit_note = _affine_mm(img)
    extra = {**metadata.extra, "header_scaling": scaling, **({"spatial_unit": unit_note} if unit_note else {})}
    metadata = metadata.replace(extra=extra)
    volume = build_volume(data, affine, source=path, metadata=metadata, hu=metadata.Modality == "CT")
    if "ImageOrientationPatientDICOM" in metadata.extra:
        volume.slice_normal = _dicom_slice_normal(metadata.extra["ImageOrientationPatientDICOM"], side)
    return volume


def _dicom_slice_normal(orientation: object, source: Path) -> np.ndarray:
    """RAS slice normal from a DICOM ImageOrientationPatient (row and column cosines, LPS)."""
    try:
        cosines = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    except (TypeError, ValueError):
        raise InputError(source, f"ImageOrientationPatientDICOM must be 6 numbers, got {orientation!r}") from None
    normal = np.cross(cosines[0], cosines[1])
    if not np.all(np.isfinite(normal)) or np.linalg.norm(normal) < 0.5:
        raise InputError(source, f"ImageOrientationPatientDICOM {cosines.ravel().tolist()} has no slice direction")
    return LPS_TO_RAS[:3, :3] @ (normal / np.linalg.norm(normal))


def _temp_sibling(path: Path) -> Path:
    """A temporary name in ``path``'s folder that keeps its full suffix (``.nii.gz``)."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def write_nifti(volume: Volume, path: str | PathLike[str], *, sidecar: bool = False) -> Path:
    """Write ``volume`` as NIfTI (``.nii`` or ``.nii.gz``), atomically; returns the path.

    One channel is written as a 3D image, several as 4D (channels on the fourth axis), so
    :func:`read_nifti` gives the volume back. ``sidecar=True`` also writes the typed metadata
    as a JSON sidecar of the same stem.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise InputError(path, "a NIfTI file name must end in .nii or .nii.gz")
    array = np.moveaxis(np.asarray(volume.array), 0, -1)
    img = nib.Nifti1Image(array[..., 0] if array.shape[-1] == 1 else array, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    tmp = _temp_sibling(path)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if sidecar:
        side = sidecar_path(path)
        tmp_side = _temp_sibling(side)
        tmp_side.write_text(json.dumps(volume.metadata.to_dict(), indent=2), encoding="utf-8")
        os.replace(tmp_side, side)
    return path
