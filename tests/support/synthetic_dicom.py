"""Small synthetic DICOM series for the reader tests: classic MR/CT files and an enhanced MR file.

Voxel values encode their (column, row, slice) index, so a test can check the voxel order;
files are written in shuffled order with scrambled InstanceNumbers, so only geometry can
order them. Every file carries patient identity ("Doe^John") for the PHI tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

PHI = {
    "PatientName": "Doe^John",
    "PatientID": "MRN-123456",
    "PatientBirthDate": "19700101",
    "PatientAddress": "1 Main Street, Springfield",
    "InstitutionName": "Springfield General",
    "ReferringPhysicianName": "Who^Doctor",
    "AccessionNumber": "ACC998877",
    "StudyDate": "20240102",
    "StudyTime": "101112",
    "StationName": "MRI-ROOM-3",
    "DeviceSerialNumber": "SN-4242",
    "ImageComments": "patient John Doe, claustrophobic",
}
MR_TAGS = {
    "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "Prisma",
    "MagneticFieldStrength": 3,
    "SeriesDescription": "t2_tse_tra",
    "MRAcquisitionType": "2D",
    "ScanningSequence": ["SE", "IR"],
    "SequenceVariant": ["SK", "SP"],
    "EchoTime": 85,
    "RepetitionTime": 6000,
    "InversionTime": 2500,
    "FlipAngle": 150,
    "SliceThickness": 2.5,
}
# The same acquisition as dcm2niix writes it into a JSON sidecar (seconds, joined codes).
MR_SIDECAR = {
    "Modality": "MR",
    "Manufacturer": "SIEMENS",
    "ManufacturersModelName": "Prisma",
    "MagneticFieldStrength": 3,
    "SeriesDescription": "t2_tse_tra",
    "MRAcquisitionType": "2D",
    "ScanningSequence": "SE_IR",
    "SequenceVariant": "SK_SP",
    "EchoTime": 0.085,
    "RepetitionTime": 6.0,
    "InversionTime": 2.5,
    "FlipAngle": 150,
    "SliceThickness": 2.5,
}


def rotation(z_deg: float, x_deg: float) -> np.ndarray:
    """Rotation about z then x; its first two columns make an oblique ImageOrientationPatient."""
    z, x = np.radians(z_deg), np.radians(x_deg)
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def voxel_values(rows: int, cols: int, n_slices: int) -> np.ndarray:
    """(n_slices, rows, cols) uint16 values 1000*k + 30*r + c + 1 (unique, nonzero)."""
    k, r, c = np.meshgrid(np.arange(n_slices), np.arange(rows), np.arange(cols), indexing="ij")
    return (1000 * k + 30 * r + c + 1).astype(np.uint16)


def _base(sop_class: str, modality: str, series_uid: str, study_uid: str, tags: dict[str, Any]) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesNumber = 1
    for key, value in {**PHI, **tags}.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def slice_positions(origin: Sequence[float], iop: Sequence[float], gaps: Sequence[float], shift: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """LPS positions: ``origin`` then one step per gap along the normal, plus ``shift`` per slice (tilt)."""
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    depth = np.concatenate([[0.0], np.cumsum(gaps)])
    return np.asarray(origin, float) + depth[:, None] * normal + np.arange(len(depth))[:, None] * np.asarray(shift, float)


def write_series(
    folder: Path,
    *,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-20.0, 15.0, 40.0),
    gaps: Sequence[float] = (2.5, 2.5, 2.5, 2.5),
    shift: Sequence[float] = (0, 0, 0),
    rows: int = 6,
    cols: int = 7,
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    modality: str = "MR",
    rescale: tuple[float, float] | None = None,
    tags: dict[str, Any] | None = None,
    series_uid: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write a classic single-frame series into ``folder``; returns its files (in write order)."""
    folder.mkdir(parents=True, exist_ok=True)
    positions = slice_positions(origin, iop, gaps, shift)
    values = voxel_values(rows, cols, len(positions))
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    sop = MRImageStorage if modality == "MR" else CTImageStorage
    base_tags = dict(MR_TAGS if modality == "MR" else {"Manufacturer": "GE", "SliceThickness": float(gaps[0]) if gaps else 1.0})
    base_tags.update(tags or {})
    order = list(range(len(positions)))
    random.Random(seed).shuffle(order)
    paths = []
    for n, k in enumerate(order):
        ds = _base(sop, modality, series_uid, study_uid, base_tags)
        ds.InstanceNumber = len(order) - n  # deliberately unrelated to position
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.PixelSpacing = list(pixel_spacing)
        ds.Rows, ds.Columns = rows, cols
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.PixelData = values[k].tobytes()
        path = folder / f"{series_uid[-8:]}_{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(
    path: Path,
    *,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-20.0, 15.0, 40.0),
    gaps: Sequence[float] = (2.5, 2.5, 2.5, 2.5),
    rows: int = 6,
    cols: int = 7,
    pixel_spacing: tuple[float, float] = (0.8, 0.6),
    seed: int = 0,
) -> Path:
    """Write an enhanced multi-frame MR file (frames in shuffled order, geometry in functional groups)."""
    positions = slice_positions(origin, iop, gaps)
    values = voxel_values(rows, cols, len(positions))
    order = list(range(len(positions)))
    random.Random(seed).shuffle(order)
    tags = {k: v for k, v in MR_TAGS.items() if k not in ("EchoTime", "RepetitionTime", "FlipAngle", "SliceThickness")}
    ds = _base(EnhancedMRImageStorage, "MR", generate_uid(), generate_uid(), tags)
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = rows, cols
    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [float(v) for v in iop]
    shared.PixelMeasuresSequence = DicomSequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = list(pixel_spacing)
    shared.PixelMeasuresSequence[0].SliceThickness = 2.5
    shared.MRTimingAndRelatedParametersSequence = DicomSequence([Dataset()])
    shared.MRTimingAndRelatedParametersSequence[0].RepetitionTime = MR_TAGS["RepetitionTime"]
    shared.MRTimingAndRelatedParametersSequence[0].FlipAngle = MR_TAGS["FlipAngle"]
    shared.MREchoSequence = DicomSequence([Dataset()])
    shared.MREchoSequence[0].EffectiveEchoTime = MR_TAGS["EchoTime"]
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        item = Dataset()
        item.PlanePositionSequence = DicomSequence([Dataset()])
        item.PlanePositionSequence[0].ImagePositionPatient = [float(v) for v in positions[k]]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = values[order].tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
