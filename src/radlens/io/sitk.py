"""Formats read through SimpleITK (NRRD, MetaImage .mha/.mhd) to :class:`Volume`."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from radlens.errors import InputError
from radlens.io.build import LPS_TO_RAS, build_volume, check_voxel_count, library_reason
from radlens.io.volume import Volume

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def sitk_affine(image: object) -> np.ndarray:
    """RAS voxel-to-world affine of a SimpleITK image (ITK works in LPS).

    A 2D image gets a unit third axis along the normal of its plane.
    """
    dim = image.GetDimension()  # type: ignore[attr-defined]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)  # type: ignore[attr-defined]
    lps = np.eye(4)
    lps[:dim, :dim] = direction[:3, :3] @ np.diag(image.GetSpacing()[:3])  # type: ignore[attr-defined]
    lps[:dim, 3] = image.GetOrigin()[:3]  # type: ignore[attr-defined]
    return LPS_TO_RAS @ lps


def read_sitk(path: str | PathLike[str]) -> Volume:
    """Read a 2D/3D scalar or vector image with SimpleITK; vector components become channels."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only: its size is checked before ITK allocates the image
        check_voxel_count((*reader.GetSize(), reader.GetNumberOfComponents()), path)
        image = reader.Execute()
    except RuntimeError as err:
        last = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(path, f"SimpleITK cannot read it: {library_reason(last, path)}") from None
    if image.GetDimension() not in (2, 3):
        raise InputError(path, f"{image.GetDimension()}D images are not supported (2D or 3D only)")
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X[, C]) or (Y, X[, C])
    spatial = image.GetDimension()
    array = np.moveaxis(array, list(range(spatial)), list(reversed(range(spatial))))  # -> (X, Y[, Z][, C])
    if spatial == 2:
        array = array[:, :, None]
    return build_volume(array, sitk_affine(image), source=path)
