"""The trusted reference for DICOM geometry: SimpleITK's reading of a series, as a RAS+ NIfTI image.

Derived here from SimpleITK's own direction/spacing/origin (not radlens's converter), so tests compare
radlens against an independent computation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sitk_series_ras(folder: Path):  # -> nib.Nifti1Image
    """Read the DICOM series in ``folder`` with SimpleITK; LPS -> RAS, voxels reoriented to RAS+."""
    import nibabel as nib
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return nib.as_closest_canonical(nib.Nifti1Image(array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps))
