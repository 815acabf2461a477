"""``read_volume``: one entry point that picks the reader from the path."""

from __future__ import annotations

import dataclasses
from os import PathLike
from pathlib import Path

import numpy as np

from radlens.errors import InputError
from radlens.io.volume import Volume

NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _is_dicom(path: Path) -> bool:
    """DICOM files often have no suffix: look for the ``DICM`` magic after the preamble."""
    with path.open("rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _read(path: Path, series_uid: str | None) -> Volume:
    from radlens.io.dicom import read_dicom_series
    from radlens.io.images import PILLOW_SUFFIXES
    from radlens.io.nifti import read_nifti
    from radlens.io.sitk import SITK_SUFFIXES, read_sitk

    name = path.name.lower()
    if path.is_dir() or name.endswith(DICOM_SUFFIXES):
        return read_dicom_series(path, series_uid=series_uid)
    if name.endswith(NIBABEL_SUFFIXES):
        return read_nifti(path)
    if name.endswith(SITK_SUFFIXES):
        return read_sitk(path)
    if name.endswith(PILLOW_SUFFIXES + (".npy",)):
        raise InputError(path, "a 2D image/array has no orientation; read it with radlens.io.images.read_image2d")
    if _is_dicom(path):
        return read_dicom_series(path)
    raise InputError(path, "unknown image format (expected NIfTI, DICOM, NRRD, MHA/MHD)")


def read_volume(
    path: str | PathLike[str],
    *,
    rescale: tuple[float, float] | None = None,
    series_uid: str | None = None,
) -> Volume:
    """Read a volume file or DICOM folder into a RAS+ channel-first :class:`Volume`.

    ``rescale=(slope, intercept)`` maps the values the file gives (after the file's own
    header/DICOM scaling) to Hounsfield units, for CT files whose stored values need a slope
    and intercept from a metadata table (CT-RATE raw volumes). It is never applied implicitly:
    volumes that already hold HU are read with ``rescale=None``. When given, the volume is
    marked ``hu=True``, its array becomes float32 and ``metadata.extra["rescale"]`` records
    the values. ``series_uid`` picks one series from a DICOM folder that holds several.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    volume = _read(path, series_uid)
    if rescale is None:
        return volume
    slope, intercept = (float(v) for v in rescale)
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0.0:
        raise InputError(path, f"rescale must be a finite, non-zero slope and a finite intercept, got {rescale}")
    array = np.multiply(volume.array, np.float32(slope), dtype=np.float32)  # one float32 array, even from int16
    array += np.float32(intercept)
    extra = {**volume.metadata.extra, "rescale": {"slope": slope, "intercept": intercept}}
    return dataclasses.replace(volume, array=array, hu=True, metadata=volume.metadata.replace(extra=extra))
