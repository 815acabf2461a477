"""Readers and writers: NIfTI, DICOM, PNG/NPY, SimpleITK formats; metadata; PHI filter.

Every reader returns a :class:`Volume` (channel-first, RAS+, affine in mm) or raises
:class:`radlens.errors.InputError` naming the file. Heavy libraries are imported on use.
"""

from radlens.io.dicom import find_series, read_dicom_series
from radlens.io.images import read_image2d
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.nifti import read_nifti, write_nifti
from radlens.io.phi import safe_tags
from radlens.io.reader import read_volume
from radlens.io.sidecar import metadata_from_mapping, read_sidecar
from radlens.io.volume import Volume

__all__ = [
    "AcquisitionMetadata",
    "Volume",
    "find_series",
    "metadata_from_mapping",
    "read_dicom_series",
    "read_image2d",
    "read_nifti",
    "read_sidecar",
    "read_volume",
    "safe_tags",
    "write_nifti",
]
