"""NIfTI (and other nibabel formats: MGH/MGZ) to :class:`Volume`, and atomic NIfTI writing."""

from __future__ import annotations

import json
import os
import zlib
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from radlens.errors import InputError
from radlens.io.build import LPS_TO_RAS, build_volume
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


def _load(path: Path) -> tuple[np.ndarray, Any, tuple[float, float]]:
    """Voxel data (at least 3 axes), the nibabel image and its header scaling, or a clear InputError.

    Without header scaling the data is the stored array (e.g. int16 CT), read once and kept
    in its dtype; with scaling nibabel applies it and returns float32. The file is read into
    memory (no memory map), so the volume never depends on the file staying unchanged.
    """
    import nibabel as nib

    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        img = nib.load(path, mmap=False)
        scaling = _header_scaling(img)
        scaled = scaling != (1.0, 0.0)
        data = np.asarray(img.dataobj, dtype=np.float32) if scaled else np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, zlib.error, OSError, ValueError) as err:
        raise InputError(path, f"cannot read as NIfTI (truncated or corrupt?): {err}") from None
    return (data[:, :, None] if data.ndim == 2 else data), img, scaling


def read_mask(path: str | PathLike[str]) -> Volume:
    """Read a NIfTI label map (lesion or segmentation mask) in RAS+, keeping its integer labels
    dtype; an empty mask is allowed."""
    path = Path(path)
    data, img, _ = _load(path)
    return build_volume(data, img.affine, source=path, allow_empty=True)


def read_nifti(path: str | PathLike[str]) -> Volume:
    """Read a NIfTI file into a RAS+ channel-first :class:`Volume`.

    A 4D file's fourth axis (and any later axis) becomes channels; a 2D file becomes
    ``(C, X, Y, 1)``. nibabel applies the header's ``scl_slope``/``scl_inter`` (values become
    float32); without scaling the stored integer dtype is kept (int16 CT stays int16, half the
    memory of float32). The values used are recorded in ``metadata.extra["header_scaling"]``
    with ``applied`` telling whether they changed the stored values. Metadata comes from a
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
    metadata = metadata.replace(extra={**metadata.extra, "header_scaling": scaling})
    volume = build_volume(data, img.affine, source=path, metadata=metadata, hu=metadata.Modality == "CT")
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
