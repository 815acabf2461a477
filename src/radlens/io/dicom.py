"""DICOM series to :class:`Volume`: find series in a folder tree, order slices by geometry, LPS -> RAS.

Slices are ordered by the projection of ImagePositionPatient on the slice normal (the cross
product of the ImageOrientationPatient row and column directions), never by InstanceNumber
or file name. Enhanced multi-frame files are read from their functional groups. The affine's
slice column is the mean step between slice positions, so voxel centres land where the scanner
put them even for a tilted series. Gantry tilt and small spacing irregularities are reported in
``metadata.extra["geometry"]`` and logged; a series whose slices a uniform grid would put more
than :data:`UNEVEN_TOLERANCE` of a slice step away from where they were acquired (a missing
slice, zones of different spacing) is refused with its gaps named, as a NIfTI volume cannot
hold it (dcm2niix warns and writes it anyway).

The values radlens uses are converted when a file is read (all of them for the file whose tags
become the series metadata), so a damaged file fails there, as one :class:`InputError` naming it,
not later at a tag access; the geometry tags are then checked for count and range before use.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from radlens.errors import InputError
from radlens.io.build import LPS_TO_RAS, build_volume, check_voxel_count, library_reason
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.phi import IDENTITY_TAGS, pseudonymise_uid, tag_values
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
NOT_DICOM = "not a DICOM file"
# The tags radlens reads from a file when grouping files into series (with the ids the importer
# pseudonymises), and when reading a series (geometry, pixel module); :func:`_read` converts them at
# once. The first file of a series is converted whole: its tags become the series metadata.
SCAN_TAGS = ("SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "Rows", *IDENTITY_TAGS)
READ_TAGS = (
    *SCAN_TAGS, "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SpacingBetweenSlices", "SliceThickness",
    "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
)
SPACING_TOLERANCE = 0.01  # relative deviation of a slice gap from the median that counts as irregular
# Largest distance, as a fraction of the slice step, between a slice's acquired position and the
# one a uniform grid gives it; beyond it the series is refused (a missing slice moves slices by ~half a step).
UNEVEN_TOLERANCE = 0.1
TILT_TOLERANCE_DEG = 0.01
# Most pixels in one frame (8192 x 8192): frames are decoded one at a time, so a damaged Rows/Columns
# allocates at most this much before the decoder finds the data too short.
MAX_FRAME_PIXELS = 2**26


@dataclass
class _Frame:
    """One 2D image of a series: a classic file, or one frame of an enhanced file."""

    path: Path
    index: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rescale: tuple[float, float] | None


@functools.cache
def _tag_numbers(keywords: tuple[str, ...]) -> tuple[int, ...]:
    from pydicom.datadict import tag_for_keyword

    return tuple(sorted(tag_for_keyword(keyword) for keyword in keywords))  # type: ignore[type-var]


def _used_elements(ds: Any, keywords: tuple[str, ...]) -> Iterator[Any]:
    """The elements of ``keywords`` in ``ds``, and every element inside those that are sequences."""
    for tag in _tag_numbers(keywords):
        if tag in ds:
            element = ds[tag]  # converts the raw value
            yield element
            if element.VR == "SQ":
                for item in element.value:
                    yield from item.iterall()


def _read(path: Path, header_only: bool, complete: bool = False) -> Any:
    """The parsed dataset, or InputError. pydicom converts a value on its first access; the values
    radlens reads (:data:`SCAN_TAGS` for a header, :data:`READ_TAGS` for a whole file, every
    element when ``complete``) are converted here, so a damaged value fails here, not at a later access."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=header_only)
        for _ in ds.iterall() if complete else _used_elements(ds, SCAN_TAGS if header_only else READ_TAGS):
            pass
    except InvalidDicomError:
        raise InputError(path, NOT_DICOM) from None
    # Only pydicom runs in this block. On damaged bytes its parser and value converters raise many
    # unrelated types (seen: NotImplementedError for an unknown VR, BytesLengthException, which is a
    # plain Exception, ValueError, KeyError, IndexError, AttributeError, struct.error), so any
    # exception here means "this file is damaged"; the type and message are kept in the reason.
    except Exception as err:
        raise InputError(path, f"unreadable DICOM file (truncated or corrupt?): {library_reason(err, path, with_type=True)}") from None
    return ds


def _numbers(value: Any, count: int, name: str, path: Path, positive: bool = False) -> np.ndarray:
    """``count`` finite numbers from a tag value (float64), or InputError naming the tag and value."""
    if value is None:
        raise InputError(path, f"{name} is missing: the slice geometry cannot be determined")
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        out = np.array([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{name} must be {count} numbers, got {value!r}") from None
    if out.shape != (count,) or not np.all(np.isfinite(out)) or (positive and np.any(out <= 0)):
        kind = "positive numbers" if positive else "finite numbers"
        raise InputError(path, f"{name} must be {count} {kind}, got {value!r}")
    return out


def _count(ds: Any, name: str, path: Path, default: int | None = None) -> int:
    """A positive integer tag (Rows, Columns, NumberOfFrames), or InputError."""
    value = ds.get(name, default)
    if value in (None, "") and default is not None:
        return default
    number = _numbers(value, 1, name, path, positive=True)[0]
    if number != int(number):
        raise InputError(path, f"{name} must be a positive integer, got {value!r}")
    return int(number)


def find_series(root: str | PathLike[str]) -> tuple[dict[str, list[Path]], list[tuple[Path, str]]]:
    """Group the DICOM images under ``root`` by SeriesInstanceUID (headers only).

    Returns ``(series, skipped)``: ``series`` maps each SeriesInstanceUID to its files (sorted
    by path, which is not slice order), ``skipped`` lists ``(path, reason)`` for files that are
    not DICOM images.
    """
    series, skipped, _ = _scan(root)
    return series, skipped


def _scan(root: str | PathLike[str]) -> tuple[dict[str, list[Path]], list[tuple[Path, str]], list[tuple[Path, str]]]:
    """:func:`find_series` plus the skipped files that are damaged DICOM files (a DICOM preamble,
    then bytes pydicom cannot parse), which may have been slices of a series."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder")
    series: dict[str, list[Path]] = {}
    skipped: list[tuple[Path, str]] = []
    damaged: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                ds = _read(path, header_only=True)
            except InputError as err:
                skipped.append((path, err.reason))
                if err.reason != NOT_DICOM:
                    damaged.append((path, err.reason))
                continue
            uid = ds.get("SeriesInstanceUID")
            if "Rows" not in ds or not uid:
                sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
                skipped.append((path, f"not a DICOM image series file ({sop})"))
                continue
            series.setdefault(str(uid), []).append(path)
    return series, skipped, damaged


def _group_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of a functional-group ``sequence`` for ``frame``: per-frame, else shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > index and sequence in items[index]:
            value = items[index][sequence]
            if len(value.value):
                return value.value[0]
    return None


def _spacing(value: Any, path: Path) -> tuple[float, float]:
    row, col = _numbers(value, 2, "PixelSpacing", path, positive=True)
    return float(row), float(col)


def _rescale_of(item: Any, path: Path) -> tuple[float, float] | None:
    if item is None or "RescaleIntercept" not in item:
        return None
    slope = _numbers(item.get("RescaleSlope", 1.0), 1, "RescaleSlope", path)[0]
    intercept = _numbers(item.RescaleIntercept, 1, "RescaleIntercept", path)[0]
    if slope == 0.0:
        raise InputError(path, "RescaleSlope is 0: every voxel would have the same value")
    return float(slope), float(intercept)


def _frames(ds: Any, path: Path) -> list[_Frame]:
    """The frames of one file with their geometry."""
    n_frames = _count(ds, "NumberOfFrames", path, default=1)
    if "PerFrameFunctionalGroupsSequence" in ds:
        if len(ds.PerFrameFunctionalGroupsSequence) != n_frames:
            raise InputError(path, f"NumberOfFrames is {n_frames} but there are "
                                   f"{len(ds.PerFrameFunctionalGroupsSequence)} per-frame functional groups")
        frames = []
        for i in range(n_frames):
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
                    position=_numbers(pos.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
                    orientation=_numbers(ori.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path),
                    pixel_spacing=_spacing(meas.get("PixelSpacing"), path),
                    rescale=_rescale_of(_group_item(ds, i, "PixelValueTransformationSequence"), path),
                )
            )
        return frames
    if n_frames > 1:
        raise InputError(path, "multi-frame file without per-frame geometry is not supported")
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        raise InputError(path, f"no {', '.join(missing)}: the slice geometry cannot be determined")
    return [
        _Frame(
            path=path,
            index=None,
            position=_numbers(ds.ImagePositionPatient, 3, "ImagePositionPatient", path),
            orientation=_numbers(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", path),
            pixel_spacing=_spacing(ds.PixelSpacing, path),
            rescale=_rescale_of(ds, path),
        )
    ]


def _frame_name(frame: _Frame) -> str:
    return frame.path.name if frame.index is None else f"{frame.path.name} frame {frame.index}"


def _uneven_reason(frames: list[_Frame], order: list[int], depth: np.ndarray, median: float, off_grid: float) -> str:
    """Why an unevenly spaced series is refused: its gaps that differ from the median, with the
    slices (file, position along the slice normal) on either side."""
    sorted_depth = depth[order]
    gaps = np.diff(sorted_depth)
    odd = [int(i) for i in np.flatnonzero(np.abs(gaps - median) > SPACING_TOLERANCE * median)]
    listed = [
        f"{gaps[i]:.4g} mm between {_frame_name(frames[order[i]])} ({sorted_depth[i]:.4g} mm) and "
        f"{_frame_name(frames[order[i + 1]])} ({sorted_depth[i + 1]:.4g} mm)"
        for i in odd[:3]
    ]
    more = f" and {len(odd) - 3} more" if len(odd) > 3 else ""
    return (
        f"slices are not evenly spaced (median gap {median:.4g} mm; {'; '.join(listed)}{more}): missing slices "
        f"or zones of different spacing; stacked on a uniform grid, slices would sit up to {off_grid:.3g} mm from "
        "where they were acquired, so the series is refused (read the evenly spaced parts as separate series)"
    )


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
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 0.5:
        raise InputError(source, f"ImageOrientationPatient {orientation.tolist()} is not two unit vectors")
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
        step = (positions[order[-1]] - positions[order[0]]) / (len(frames) - 1)
        along = float(step @ normal)
        grid = positions[order[0]] + np.arange(len(frames))[:, None] * step
        off_grid = float(np.max(np.linalg.norm(positions[order] - grid, axis=1)))
        if off_grid > UNEVEN_TOLERANCE * along:
            raise InputError(source, _uneven_reason(frames, order, depth, median, off_grid))
        if float(np.max(np.abs(gaps - median))) > SPACING_TOLERANCE * median:
            low, high = float(np.min(gaps)), float(np.max(gaps))
            warnings.append(f"irregular slice spacing: {low:.4g} to {high:.4g} mm (median {median:.4g} mm)")
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


def _positive(value: Any) -> float | None:
    """``value`` as a positive finite number, or None (a missing or unusable optional tag)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


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


def _frame_size(ds: Any, path: Path) -> tuple[int, int]:
    """(Rows, Columns) of a file, checked before any pixel memory is allocated."""
    rows, cols = _count(ds, "Rows", path), _count(ds, "Columns", path)
    if rows * cols > MAX_FRAME_PIXELS:
        raise InputError(path, f"Rows x Columns = {rows} x {cols}: more pixels per frame than radlens reads "
                               f"(radlens.io.dicom.MAX_FRAME_PIXELS = {MAX_FRAME_PIXELS:,}); a damaged header?")
    return rows, cols


def _decode(ds: Any, path: Path) -> list[np.ndarray]:
    """The stored pixel values of every frame of one file, decoded one frame at a time."""
    from pydicom.pixels import iter_pixels

    try:
        return list(iter_pixels(ds))
    # Only pydicom and its decoder plugins run here; on damaged or unsupported pixel data they raise
    # many unrelated types (ValueError, RuntimeError, IndexError, struct.error, ...).
    except Exception as err:
        raise InputError(path, f"cannot decode pixel data (truncated or corrupt?): {library_reason(err, path, with_type=True)}") from None


def _pixels(ds: Any, frames: list[_Frame], path: Path) -> list[np.ndarray]:
    """Float32 pixel planes (rows, cols) of ``frames`` of one file, rescale (or modality LUT) applied.

    The rescale is the one :func:`_frames` checked for each frame (enhanced files keep it per
    frame, which pydicom's modality LUT does not read); a classic file with a Modality LUT
    Sequence goes through pydicom's ``apply_modality_lut``.
    """
    from pydicom.pixels import apply_modality_lut

    if ds.get("SamplesPerPixel", 1) != 1:
        raise InputError(path, f"colour image ({ds.get('PhotometricInterpretation')}) is not a grey volume")
    rows, cols = _frame_size(ds, path)
    check_voxel_count((len(frames), rows, cols), path)
    raw = _decode(ds, path)
    if len(raw) != len(frames):
        raise InputError(path, f"the pixel data holds {len(raw)} frames, the header {len(frames)}")
    out = []
    for frame in frames:
        plane = raw[frame.index or 0]
        if frame.index is None and "ModalityLUTSequence" in ds:
            try:
                plane = apply_modality_lut(plane, ds)
            except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:  # a damaged LUT
                raise InputError(path, f"cannot apply the Modality LUT: {library_reason(err, path)}") from None
        elif frame.rescale is not None:
            slope, intercept = frame.rescale
            plane = plane.astype(np.float64) * slope + intercept  # as pydicom's modality LUT computes it
        out.append(np.asarray(plane, dtype=np.float32))
    return out


def _select(paths: str | PathLike[str] | Sequence[str | PathLike[str]], series_uid: str | None) -> list[Path]:
    """The files of one series from a folder, a file or a list of files."""
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
        folder = Path(paths)
        series, skipped, damaged = _scan(folder)
        if damaged:
            path, reason = damaged[0]
            more = f" (and {len(damaged) - 1} more damaged files)" if len(damaged) > 1 else ""
            raise InputError(path, f"{reason}{more}: the series may be incomplete, so the folder is not read "
                                   "without it; move the damaged file out, or pass the series' files")
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
    the error message lists); a folder holding a damaged DICOM file is refused (the series may
    be incomplete), files that are not DICOM are skipped. RescaleSlope/Intercept are applied; a
    CT series with a rescale is in Hounsfield units (``hu=True``). Metadata is PHI-filtered and
    holds the geometry warnings in ``extra["geometry"]``; unevenly spaced slices are refused.
    """
    files = _select(paths, series_uid)
    source = files[0].parent if len(files) > 1 else files[0]
    datasets = [_read(f, header_only=False, complete=i == 0) for i, f in enumerate(files)]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise InputError(source, f"the files belong to {len(uids)} different series")
    frames_per_file = [_frames(ds, f) for ds, f in zip(datasets, files)]
    frames = [fr for per_file in frames_per_file for fr in per_file]
    sizes = {_frame_size(ds, f) for ds, f in zip(datasets, files)}
    if len(sizes) > 1:
        raise InputError(source, f"slices differ in size: {sorted(sizes)}")
    check_voxel_count((len(frames), *next(iter(sizes))), source)  # the stacked volume, before decoding
    first = datasets[0]
    mapping = _series_mapping(first)
    thickness = next(
        ((tag, gap) for tag in ("SpacingBetweenSlices", "SliceThickness") if (gap := _positive(mapping.get(tag)))), None
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
