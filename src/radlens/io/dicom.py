"""DICOM series to :class:`Volume`: find series in a folder tree, order slices by geometry, LPS -> RAS.

Slices are ordered by the projection of ImagePositionPatient on the slice normal (the cross
product of the ImageOrientationPatient row and column directions), never by InstanceNumber
or file name. Enhanced multi-frame files are read from their functional groups. Gantry tilt
and irregular slice spacing are reported in ``metadata.extra["geometry"]`` and logged; the
affine's slice column is the mean step between slice positions, so voxel centres land where
the scanner put them even for a tilted series.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from radlens.errors import InputError
from radlens.io.build import LPS_TO_RAS, build_volume
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.phi import pseudonymise_uid, tag_values
from radlens.io.sidecar import metadata_from_mapping
from radlens.io.volume import Volume

log = logging.getLogger(__name__)

# Tags that differ from slice to slice: not series metadata.
PER_SLICE_TAGS = frozenset(
    {
        "ImagePositionPatient",
        "InstanceNumber",
        "SliceLocation",
        "SOPInstanceUID",
        "MediaStorageSOPInstanceUID",
        "WindowCenter",
        "WindowWidth",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "DimensionIndexValues",
        "FrameAcquisitionNumber",
        "InStackPositionNumber",
        "TemporalPositionIndex",
        "StackID",
    }
)
SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the median that counts as irregular
TILT_TOLERANCE_DEG = 0.01


@dataclass
class _Frame:
    """One 2D image of a series: a classic file, or one frame of an enhanced file."""

    path: Path
    index: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rescale: tuple[float, float] | None


def _read(path: Path, header_only: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        raise InputError(path, "not a DICOM file") from None
    except (OSError, EOFError, ValueError, KeyError, AttributeError) as err:
        raise InputError(path, f"unreadable DICOM file (truncated?): {err}") from None


def find_series(root: str | PathLike[str]) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Group the DICOM images under ``root`` by SeriesInstanceUID (headers only).

    Returns ``(series, skipped)``: ``series`` maps each SeriesInstanceUID to its files (sorted
    by path, which is not slice order), ``skipped`` lists ``(path, reason)`` for files that are
    not DICOM images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    series: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                ds = _read(path, header_only=True)
            except InputError as err:
                skipped.append((path, err.reason))
                continue
            uid = ds.get("SeriesInstanceUID")
            if "Rows" not in ds or not uid:
                sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
                skipped.append((path, f"not a DICOM image series file ({sop})"))
                continue
            series.setdefault(str(uid), []).append(path)
    return series, skipped


def _group_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of a functional-group ``sequence`` for ``frame``: per-frame, else shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > index and sequence in items[index]:
            value = items[index][sequence]
            if len(value.value):
                return value.value[0]
    return None


def _rescale_of(item: Any) -> tuple[float, float] | None:
    if item is None or "RescaleIntercept" not in item:
        return None
    return float(item.get("RescaleSlope", 1.0)), float(item.RescaleIntercept)


def _frames(ds: Any, path: Path) -> list[_Frame]:
    """The frames of one file with their geometry."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        frames = []
        for i in range(int(ds.get("NumberOfFrames", 1))):
            pos, ori, meas = (
                _group_item(ds, i, s)
                for s in ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence")
            )
            if pos is None or ori is None or meas is None:
                raise InputError(path, f"frame {i} has no plane position/orientation/pixel measures")
            frames.append(
                _Frame(
                    path=path,
                    index=i,
                    position=np.asarray(pos.ImagePositionPatient, float),
                    orientation=np.asarray(ori.ImageOrientationPatient, float),
                    pixel_spacing=(float(meas.PixelSpacing[0]), float(meas.PixelSpacing[1])),
                    rescale=_rescale_of(_group_item(ds, i, "PixelValueTransformationSequence")),
                )
            )
        return frames
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(path, "multi-frame file without per-frame geometry is not supported")
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        raise InputError(path, f"no {', '.join(missing)}: the slice geometry cannot be determined")
    return [
        _Frame(
            path=path,
            index=None,
            position=np.asarray(ds.ImagePositionPatient, float),
            orientation=np.asarray(ds.ImageOrientationPatient, float),
            pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
            rescale=_rescale_of(ds),
        )
    ]


def _geometry(
    frames: list[_Frame], thickness: tuple[str, float] | None, source: Path
) -> tuple[list[int], np.ndarray, np.ndarray, list[str]]:
    """Slice order, LPS affine, unit slice normal (LPS) and geometry warnings.

    ``thickness`` is ``(tag, mm)`` for the through-plane spacing of a single slice.
    """
    orientation = frames[0].orientation
    if any(np.max(np.abs(f.orientation - orientation)) > 1e-4 for f in frames):
        raise InputError(source, "ImageOrientationPatient differs between slices (localizer or several stacks?)")
    if any(f.pixel_spacing != frames[0].pixel_spacing for f in frames):
        raise InputError(source, "PixelSpacing differs between slices")
    row, col = orientation[:3], orientation[3:]
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if abs(float(row @ col)) > 1e-3:
        raise InputError(source, f"ImageOrientationPatient directions are not orthogonal: {orientation.tolist()}")
    normal = np.cross(row, col)
    positions = np.stack([f.position for f in frames])
    depth = positions @ normal
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    warnings: list[str] = []
    if len(frames) == 1:
        tag, gap = thickness if thickness and thickness[1] > 0 else ("no tag, a default", 1.0)
        step = normal * gap
        warnings.append(f"single slice: through-plane spacing {gap:g} mm taken from {tag}")
    else:
        gaps = np.diff(depth[order])
        if np.min(gaps) < 1e-3:
            shared = int(np.sum(gaps < 1e-3))
            raise InputError(source, f"{shared} slices share a position (multi-echo, temporal or duplicate files?)")
        median = float(np.median(gaps))
        if float(np.max(np.abs(gaps - median))) > SPACING_TOLERANCE * median:
            low, high = float(np.min(gaps)), float(np.max(gaps))
            warnings.append(f"irregular slice spacing: {low:.4g} to {high:.4g} mm (median {median:.4g} mm)")
        step = (positions[order[-1]] - positions[order[0]]) / (len(frames) - 1)
        along = float(step @ normal)
        tilt = float(np.degrees(np.arctan2(np.linalg.norm(step - along * normal), along)))
        if tilt > TILT_TOLERANCE_DEG:
            warnings.append(
                f"slice positions are not along the slice normal (gantry tilt {tilt:.2f} deg); the affine is sheared"
            )
    affine = np.eye(4)
    affine[:3, 0] = row * frames[0].pixel_spacing[1]  # column index runs along the row direction
    affine[:3, 1] = col * frames[0].pixel_spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = positions[order[0]]
    return order, affine, normal, warnings


def _series_mapping(ds: Any) -> dict[str, Any]:
    """Tag values of the series, with enhanced functional-group values lifted to the top."""
    values = tag_values(ds)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups)
        if not items:
            continue
        for element in items[0]:
            if element.VR == "SQ" and len(element.value):
                for key, value in tag_values(element.value[0]).items():
                    values.setdefault(key, value)
    return {k: v for k, v in values.items() if k not in PER_SLICE_TAGS}


def _pixels(ds: Any, frames: list[_Frame], path: Path) -> list[np.ndarray]:
    """Float32 pixel planes (rows, cols) of ``frames`` of one file, rescale applied."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("SamplesPerPixel", 1) != 1:
        raise InputError(path, f"colour image ({ds.get('PhotometricInterpretation')}) is not a grey volume")
    try:
        raw = ds.pixel_array
    except Exception as err:  # pydicom's decoders raise many types (ValueError, RuntimeError, ...)
        raise InputError(path, f"cannot decode pixel data (truncated?): {err}") from None
    if frames[0].index is None:
        return [np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)]
    # pydicom's modality LUT reads only top-level tags; enhanced files keep rescale per frame.
    raw = raw.reshape(-1, *raw.shape[-2:])
    out = []
    for frame in frames:
        slope, intercept = frame.rescale or (1.0, 0.0)
        out.append(raw[frame.index].astype(np.float32) * np.float32(slope) + np.float32(intercept))
    return out


def _select(paths: str | PathLike[str] | Sequence[str | PathLike[str]], series_uid: str | None) -> list[Path]:
    """The files of one series from a folder, a file or a list of files."""
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
        folder = Path(paths)
        series, skipped = find_series(folder)
        if series_uid is not None:
            series = {u: p for u, p in series.items() if series_uid in (u, pseudonymise_uid(u))}
        if not series:
            wanted = f"series {series_uid}" if series_uid else "DICOM image series"
            raise InputError(folder, f"no {wanted} found ({len(skipped)} files skipped)")
        if len(series) > 1:
            listing = ", ".join(f"{pseudonymise_uid(u)} ({len(p)} files)" for u, p in series.items())
            raise InputError(folder, f"holds {len(series)} series; choose one with series_uid: {listing}")
        return next(iter(series.values()))
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not files:
        raise InputError(None, "no DICOM files given")
    for file in files:
        if not file.is_file():
            raise InputError(file, "file does not exist")
    return files


def read_dicom_series(
    paths: str | PathLike[str] | Sequence[str | PathLike[str]], *, series_uid: str | None = None
) -> Volume:
    """Read one DICOM series (a folder, one file, or a list of files) into a RAS+ :class:`Volume`.

    A folder holding several series needs ``series_uid`` (the real UID or the pseudonym that
    the error message lists). RescaleSlope/Intercept are applied; a CT series with a rescale
    is in Hounsfield units (``hu=True``). Metadata is PHI-filtered and holds the geometry
    warnings in ``extra["geometry"]``.
    """
    files = _select(paths, series_uid)
    source = files[0].parent if len(files) > 1 else files[0]
    datasets = [_read(f, header_only=False) for f in files]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise InputError(source, f"the files belong to {len(uids)} different series")
    frames_per_file = [_frames(ds, f) for ds, f in zip(datasets, files)]
    frames = [fr for per_file in frames_per_file for fr in per_file]
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise InputError(source, f"slices differ in size: {sorted(sizes)}")
    first = datasets[0]
    mapping = _series_mapping(first)
    thickness = next(
        ((tag, float(mapping[tag])) for tag in ("SpacingBetweenSlices", "SliceThickness") if mapping.get(tag)), None
    )
    order, affine_lps, normal, warnings = _geometry(frames, thickness, source)
    planes = [p for ds, f, fr in zip(datasets, files, frames_per_file) for p in _pixels(ds, fr, f)]
    data = np.stack([planes[i].T for i in order], axis=-1)  # (rows, cols) -> (X along row dir, Y, Z)
    for warning in warnings:
        log.warning("%s: %s", source, warning)
    metadata: AcquisitionMetadata = metadata_from_mapping(mapping, time_unit="ms", source=files[0])
    metadata = metadata.replace(extra={**metadata.extra, "geometry": warnings})
    hu = metadata.Modality == "CT" and all(f.rescale is not None for f in frames)
    volume = build_volume(data, LPS_TO_RAS @ affine_lps, source=source, metadata=metadata, hu=hu)
    volume.slice_normal = LPS_TO_RAS[:3, :3] @ normal
    return volume
