"""Write a phantom series as a classic DICOM MR Image Storage series (one file per slice) with pydicom.

Geometry is derived from the same RAS affine as the NIfTI (converted to LPS), so a DICOM reader and
a NIfTI reader must agree on where every voxel is. Patient identity fields hold obviously synthetic
values, so the PHI filter has something to remove without any real person involved.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from radlens.common.atomic import write_bytes_atomic

LPS = np.diag([-1.0, -1.0, 1.0])


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{value:.8g}"[:16]


def patient_identity(subject: str) -> dict[str, str]:
    """Synthetic identity for ``sub-001``: PatientName PHANTOM^SUBJECT001 and friends."""
    number = subject.split("-")[-1]
    return {
        "PatientName": f"PHANTOM^SUBJECT{number}",
        "PatientID": f"PHANTOM-{number}",
        "PatientBirthDate": "19000101",
        "PatientSex": "O",
        "AccessionNumber": f"PHANTOMACC{number}",
        "InstitutionName": "RADLENS PHANTOM HOSPITAL",
        "ReferringPhysicianName": "PHANTOM^REFERRER",
        "StudyDate": "20000101",
        "StudyTime": "120000",
    }


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _in_plane_steps(affine: np.ndarray, slice_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """LPS voxel steps along a slice's columns and rows (column index walks the first in-plane axis)."""
    col_axis, row_axis = [a for a in range(3) if a != slice_axis]
    return LPS @ affine[:3, col_axis], LPS @ affine[:3, row_axis]


def image_orientation(affine: np.ndarray, slice_axis: int) -> list[float]:
    """DICOM ImageOrientationPatient (row then column direction cosines, LPS) of slices along ``slice_axis``."""
    columns_dir, rows_dir = _in_plane_steps(affine, slice_axis)
    cosines = np.concatenate([columns_dir / np.linalg.norm(columns_dir), rows_dir / np.linalg.norm(rows_dir)])
    return [round(float(v), 6) for v in cosines]


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    affine: np.ndarray,
    slice_axis: int,
    sidecar: Mapping[str, Any],
    subject: str,
    series_key: str,
) -> list[Path]:
    """Write ``array`` (int16, stored voxel order, RAS ``affine``) as one DICOM file per slice along ``slice_axis``.

    ``sidecar`` supplies the acquisition tags (seconds -> ms); a field missing from it is missing
    here too. ``series_key`` (unique per series, e.g. seed + file name) makes UIDs deterministic.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    columns_dir, rows_dir = _in_plane_steps(affine, slice_axis)
    step = LPS @ affine[:3, slice_axis]
    origin = LPS @ affine[:3, 3]
    normal = np.cross(columns_dir, rows_dir)
    normal /= np.linalg.norm(normal)
    study_uid, frame_uid, series_uid = _uid(subject, "study"), _uid(subject, "frame"), _uid(series_key, "series")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()  # the series-wide tags, set once; each slice changes only its own
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    for key, value in patient_identity(subject).items():
        setattr(ds, key, value)
    ds.Modality = "MR"
    ds.BodyPartExamined = "BRAIN"
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.StudyID = "1"
    ds.SeriesNumber = int(sidecar.get("SeriesNumber", 1))
    _acquisition_tags(ds, sidecar)
    ds.ImageOrientationPatient = [_ds(v) for v in image_orientation(affine, slice_axis)]
    ds.PixelSpacing = [_ds(np.linalg.norm(rows_dir)), _ds(np.linalg.norm(columns_dir))]
    ds.SpacingBetweenSlices = _ds(np.linalg.norm(step))

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(array.shape[slice_axis]):
        pixels = np.ascontiguousarray(np.take(array, k, axis=slice_axis).T)  # (rows, columns)
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = _uid(series_key, "instance", k)
        ds.InstanceNumber = k + 1
        position = origin + k * step
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ normal))
        ds.set_pixel_data(pixels.astype(np.int16), "MONOCHROME2", 16, generate_instance_uid=False)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = folder / f"IM{k + 1:04d}.dcm"
        write_bytes_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths


def _acquisition_tags(ds: Any, sidecar: Mapping[str, Any]) -> None:
    """Copy the sidecar's acquisition fields into DICOM tags (times to ms, lists as multi-valued CS)."""
    for key in ("EchoTime", "RepetitionTime", "InversionTime"):
        if key in sidecar:
            setattr(ds, key, _ds(float(sidecar[key]) * 1000.0))
    for key in ("FlipAngle", "MagneticFieldStrength", "SliceThickness"):
        if key in sidecar:
            setattr(ds, key, _ds(float(sidecar[key])))
    for key in ("Manufacturer", "SeriesDescription", "MRAcquisitionType"):
        if key in sidecar:
            setattr(ds, key, str(sidecar[key]))
    if "ManufacturersModelName" in sidecar:  # the BIDS key; DICOM's keyword has no "s"
        ds.ManufacturerModelName = str(sidecar["ManufacturersModelName"])
    for key in ("ScanningSequence", "SequenceVariant"):
        if key in sidecar:
            value = sidecar[key]
            setattr(ds, key, list(value) if isinstance(value, list) else str(value).split("_"))
