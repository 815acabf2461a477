"""2D slices from a RAS+ volume: acquisition plane from the affine, slice selection, display orientation.

The acquisition plane is the world direction of the *stored* slice axis (``Volume.slice_normal``),
not MR-CLIP's "axis with the largest spacing", which mislabels any scan whose thickest
dimension is in-plane and says nothing about which way the slices were cut.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radlens.errors import InputError
from radlens.io.volume import Volume

Plane = Literal["axial", "coronal", "sagittal"]
_PLANES: tuple[Plane, Plane, Plane] = ("sagittal", "coronal", "axial")  # normal along R, A, S


@dataclass(frozen=True)
class SliceConfig:
    """Which 2D slices to cut and how.

    A pixel is foreground when it lies above ``floor + foreground_level x (p99 - floor)``, with
    ``floor`` the volume's minimum and ``p99`` its 99th percentile: MRI has Rician noise in the
    air around the head, so "above the minimum" would count every pixel and keep pure-noise edge
    slices; CT air sits at the window's floor either way.

    Attributes:
        plane: acquisition (as stored) or a fixed plane to cut (axial, coronal, sagittal).
        min_foreground: keep a slice only if at least this fraction of its pixels is foreground
            (0: keep every slice, empty edge slices included).
        foreground_level: a pixel is foreground above the volume's floor plus this fraction of the
            floor-to-99th-percentile range (0: anything above the minimum, noise included).
        position_window: keep slices whose relative position along the slicing axis (0..1, from
            the R/A/S axis' opposite end) lies in this range.
        slice_shape: the size [H, W] each slice is resized to fit, keeping its physical aspect, then padded.
        every: keep every k-th slice index.
    """

    plane: Literal["acquisition", "axial", "coronal", "sagittal"] = "acquisition"
    min_foreground: float = 0.05
    foreground_level: float = 0.1
    position_window: tuple[float, float] = (0.0, 1.0)
    slice_shape: tuple[int, int] = (224, 224)
    every: int = 1


def _closest_axis(slice_normal: np.ndarray | tuple[float, float, float]) -> tuple[int, float]:
    """RAS axis closest to the normal and the angle to it in degrees."""
    normal = np.asarray(slice_normal, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(normal)) if normal.shape == (3,) else 0.0
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError(f"slice_normal must be a non-zero 3-vector, got {slice_normal!r}")
    cosines = np.abs(normal) / norm
    axis = int(np.argmax(cosines))
    return axis, math.degrees(math.acos(min(1.0, float(cosines[axis]))))


def acquisition_plane(
    slice_normal: np.ndarray | tuple[float, float, float], oblique_tolerance_deg: float = 30.0
) -> Literal["axial", "coronal", "sagittal", "oblique"]:
    """Plane of a stored slice stack from its normal (RAS): L/R sagittal, A/P coronal, S/I axial.

    A normal farther than ``oblique_tolerance_deg`` from every world axis is "oblique".
    """
    axis, angle = _closest_axis(slice_normal)
    return "oblique" if angle > oblique_tolerance_deg else _PLANES[axis]


def plane_axis(plane: str) -> int:
    """Voxel axis of a RAS+ volume that a plane's slices are cut across (sagittal 0, coronal 1, axial 2)."""
    if plane not in _PLANES:
        raise ValueError(f"plane must be one of {_PLANES}, got {plane!r}")
    return _PLANES.index(plane)  # type: ignore[arg-type]


def _slicing_plane(volume: Volume, requested: str) -> Plane:
    """The plane to cut in; for an oblique acquisition, the closest one, with a warning."""
    if requested != "acquisition":
        plane_axis(requested)
        return requested  # type: ignore[return-value]
    if volume.slice_normal is None:
        if volume.shape[2] == 1:
            return "axial"
        raise InputError(volume.source, "no slice_normal to find the acquisition plane; set plane explicitly")
    plane = acquisition_plane(volume.slice_normal)
    if plane != "oblique":
        return plane
    axis, angle = _closest_axis(volume.slice_normal)
    warnings.warn(
        f"{volume.source}: oblique acquisition ({angle:.0f} deg from the nearest axis); "
        f"slicing along the closest RAS axis ({_PLANES[axis]})",
        stacklevel=3,
    )
    return _PLANES[axis]


def _display(stack: np.ndarray) -> np.ndarray:
    """(n, a, b) slices of a RAS+ array in radiological display orientation (n, b, a).

    Axial (n, X, Y): anterior up, patient's right on the image left (viewed from the feet).
    Coronal (n, X, Z): superior up, right on the left. Sagittal (n, Y, Z): superior up,
    anterior on the left. In RAS+ voxel order all three are "reverse both axes, swap them".
    """
    return np.ascontiguousarray(stack[:, ::-1, ::-1].transpose(0, 2, 1))


def _fit(
    stack: np.ndarray, pixel_mm: tuple[float, float], shape: tuple[int, int], fill: float, nearest: bool = False
) -> np.ndarray:
    """Resize (n, H, W) so the longest physical side fills ``shape``, then centre-pad with ``fill``.

    Images: bilinear (antialiased when shrinking), float32 out. Label maps (``nearest``): the
    nearest pixel centre ("nearest-exact", the sampling positions of bilinear with
    ``align_corners=False``, so labels stay on their image pixels), dtype kept.
    """
    import torch
    import torch.nn.functional as F

    height_mm, width_mm = stack.shape[1] * pixel_mm[0], stack.shape[2] * pixel_mm[1]
    scale = min(shape[0] / height_mm, shape[1] / width_mm)
    size = (max(1, min(shape[0], round(height_mm * scale))), max(1, min(shape[1], round(width_mm * scale))))
    out = np.full((stack.shape[0], *shape), fill, dtype=stack.dtype if nearest else np.float32)
    if stack.shape[0] == 0:
        return out
    source = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    if nearest:  # ids up to 65535 are exact in float32
        resized = F.interpolate(source, size=size, mode="nearest-exact")[:, 0].numpy()
    else:
        resized = F.interpolate(
            source, size=size, mode="bilinear", align_corners=False,
            antialias=size[0] < stack.shape[1] or size[1] < stack.shape[2],
        )[:, 0].numpy()
    top, left = (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2
    out[:, top : top + size[0], left : left + size[1]] = resized
    return out


def extract_slices(
    volume: Volume, cfg: SliceConfig, mask: Volume | None = None
) -> tuple[np.ndarray, list[dict[str, object]]]:
    """Cut a single-channel RAS+ volume into 2D slices.

    Returns ``(slices, rows)``: ``slices`` is ``(n, H, W)`` float32 with ``(H, W) =
    cfg.slice_shape``, each slice in radiological display orientation (axial: anterior up,
    patient's right on the image left; coronal: superior up, right on the left; sagittal:
    superior up, anterior on the left), resized keeping the physical aspect ratio and padded
    with the volume minimum. ``rows[i]`` describes ``slices[i]``: ``slice_index`` (along the
    slicing axis of the RAS+ array), ``position`` (0..1), ``plane``, ``foreground`` (fraction of
    foreground pixels, see :class:`SliceConfig`), ``lesion`` (1/0 if ``mask`` marks the slice, else -1).
    An oblique acquisition is cut along the closest RAS axis with a warning.
    """
    if volume.array.shape[0] != 1:
        raise InputError(volume.source, f"slicing needs a single-channel volume, got {volume.array.shape[0]}")
    if cfg.every < 1 or len(cfg.slice_shape) != 2 or min(cfg.slice_shape) < 1:
        raise ValueError(f"every must be >= 1 and slice_shape two positive sizes, got {cfg}")
    if not 0.0 <= cfg.foreground_level < 1.0 or not 0.0 <= cfg.min_foreground <= 1.0:
        raise ValueError(f"foreground_level must be in [0, 1) and min_foreground in [0, 1], got {cfg}")
    if mask is not None and mask.shape != volume.shape:
        raise InputError(mask.source, f"mask shape {mask.shape} differs from the volume's {volume.shape}")
    plane = _slicing_plane(volume, cfg.plane)
    axis = plane_axis(plane)
    data = np.moveaxis(volume.array[0], axis, 0)
    count = data.shape[0]
    floor_value = data.min()
    foreground = foreground_fraction(data, cfg.foreground_level)
    positions = np.arange(count) / (count - 1) if count > 1 else np.zeros(1)
    lo, hi = cfg.position_window
    keep = [
        int(i)
        for i in range(0, count, cfg.every)
        if foreground[i] >= cfg.min_foreground and lo <= positions[i] <= hi
    ]
    lesions = (
        np.moveaxis(mask.array[0], axis, 0)[keep].reshape(len(keep), -1).any(axis=1).astype(int)
        if mask is not None
        else np.full(len(keep), -1)
    )
    spacing = [s for a, s in enumerate(volume.spacing) if a != axis]
    slices = _fit(_display(data[keep]), (spacing[1], spacing[0]), cfg.slice_shape, float(floor_value))
    rows = [
        {
            "slice_index": i,
            "position": float(positions[i]),
            "plane": plane,
            "foreground": float(foreground[i]),
            "lesion": int(les),
        }
        for i, les in zip(keep, lesions)
    ]
    return slices, rows


def foreground_fraction(stack: np.ndarray, level: float) -> np.ndarray:
    """Per slice of ``stack`` (n, a, b), the fraction of pixels above ``floor + level x (p99 - floor)``
    (floor: the stack's minimum, p99: its 99th percentile; see :class:`SliceConfig`)."""
    floor_value = float(stack.min())
    high = float(np.percentile(stack, 99)) if level > 0 else floor_value
    threshold = floor_value + level * max(high - floor_value, 0.0)
    return (stack > threshold).mean(axis=(1, 2))


def extract_mask_slices(mask: Volume, rows: list[dict[str, object]], cfg: SliceConfig) -> np.ndarray:
    """The label-map slices that go with ``rows`` (from :func:`extract_slices` on its image).

    ``mask`` must be on the image's voxel grid (the same spatial steps, nearest neighbour). The
    same slices are cut in the same plane and display orientation and fitted to the same
    ``slice_shape`` by nearest neighbour, padded with 0: ``(n, H, W)`` in the mask's dtype, row
    ``r`` the label map of image slice ``r``.
    """
    if mask.array.shape[0] != 1:
        raise InputError(mask.source, f"a label map must have one channel, got {mask.array.shape[0]}")
    if not rows:
        return np.zeros((0, *cfg.slice_shape), dtype=mask.array.dtype)
    plane = str(rows[0]["plane"])
    axis = plane_axis(plane)
    keep = [int(r["slice_index"]) for r in rows]  # type: ignore[call-overload]
    data = np.moveaxis(mask.array[0], axis, 0)[keep]
    spacing = [s for a, s in enumerate(mask.spacing) if a != axis]
    return _fit(_display(data), (spacing[1], spacing[0]), cfg.slice_shape, 0, nearest=True)
