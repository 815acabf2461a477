"""Spatial preprocessing: reorient to RAS+, crop to the foreground, resample, crop/pad or resize.

Every function takes and returns a :class:`~radlens.io.volume.Volume` and keeps its affine
consistent: the world (RAS mm) position of every kept voxel centre is unchanged by
reorientation, crop and pad, and resampling places output voxel 0 on input voxel 0 (MONAI
``Spacing`` convention). Crop and pad follow MONAI ``ResizeWithPadOrCrop`` (crop start
``N//2 - T//2``, pad before ``(T - N)//2``), so radlens and MONAI pipelines line up voxel for voxel.

``apply_spatial`` resamples only the voxels that survive the final centre crop: the crop box
is computed on the output grid, mapped back to input coordinates, and only that region (plus
the one-voxel interpolation margin) is read. The result equals resample-then-crop.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.io.volume import Volume

if TYPE_CHECKING:
    import torch

Box = tuple[int, int, int, int, int, int]
"""Half-open voxel box ``(x0, y0, z0, x1, y1, z1)`` in the RAS+ voxel grid."""

# Output voxels per slab of the resampling kernel: bounds its float32 temporaries (~30 MB).
_SLAB_VOXELS = 2_000_000


@dataclass(frozen=True)
class SpatialConfig:
    """How a volume is brought to a model's grid.

    Attributes:
        target_spacing: voxel spacing [x, y, z] in mm to resample to (none: keep the stored spacing).
        crop_foreground: before anything else, crop to the bounding box of voxels above
            body_threshold_hu (body, CT) or of non-zero voxels (nonzero); none: no crop.
        body_threshold_hu: HU above which a voxel counts as body for crop_foreground body.
        box: crop to a fixed box [x0, y0, z0, x1, y1, z1] (half-open, RAS+ voxel grid) instead.
        shape: final spatial shape [x, y, z] (none: whatever resampling gives).
        shape_mode: crop_pad reaches shape by centre crop/pad (CT-CLIP), resize by interpolating the
            whole volume (M3D).
        pad_value: value of padded voxels in crop_pad mode (in the volume's units before intensity).
    """

    target_spacing: tuple[float, float, float] | None = None
    crop_foreground: Literal["none", "body", "nonzero"] = "none"
    body_threshold_hu: float = -500
    box: tuple[int, int, int, int, int, int] | None = None
    shape: tuple[int, int, int] | None = None
    shape_mode: Literal["crop_pad", "resize"] = "crop_pad"
    pad_value: float = 0.0


def _with_grid(volume: Volume, array: np.ndarray, affine: np.ndarray) -> Volume:
    """The same volume (metadata, source, hu, slice_normal) on a new voxel grid."""
    return dataclasses.replace(volume, array=array, affine=affine)


def _shift_affine(affine: np.ndarray, start: tuple[float, ...]) -> np.ndarray:
    """Affine of a grid whose voxel 0 sits at voxel ``start`` of the grid of ``affine``."""
    out = affine.copy()
    out[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return out


def reorient_ras(volume: Volume) -> Volume:
    """Flip/permute the voxel axes to the RAS+ order closest to the affine (views, no copy)."""
    from nibabel import orientations as ornt

    transform = ornt.ornt_transform(ornt.io_orientation(volume.affine), ornt.axcodes2ornt("RAS"))
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return volume
    array = volume.array
    for axis, flip in enumerate(transform[:, 1]):
        if flip < 0:
            array = np.flip(array, axis=axis + 1)
    perm = np.argsort(transform[:, 0])
    array = array.transpose(0, *(int(p) + 1 for p in perm))
    affine = volume.affine @ ornt.inv_ornt_aff(transform, volume.shape)
    return _with_grid(volume, array, affine)


def foreground_box(
    volume: Volume, mode: Literal["body", "nonzero"] = "nonzero", threshold: float = -500
) -> Box:
    """Bounding box of the foreground: voxels above ``threshold`` ("body") or non-zero ("nonzero").

    Computed on the volume's own voxel grid (RAS+ after ``reorient_ras``); channels are pooled.
    Reuse the box of an image for its mask (``SpatialConfig(box=...)``).
    """
    fg = volume.array > threshold if mode == "body" else volume.array != 0
    fg = fg.any(axis=0)
    if not fg.any():
        raise InputError(volume.source, f"no foreground voxels for crop_foreground={mode!r}")
    bounds = []
    for axis in range(3):
        hits = np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != axis)))
        bounds.append((int(hits[0]), int(hits[-1]) + 1))
    (x0, x1), (y0, y1), (z0, z1) = bounds
    return (x0, y0, z0, x1, y1, z1)


def crop_to_box(volume: Volume, box: Box) -> Volume:
    """Crop to a half-open voxel box (a view); the affine moves with the crop."""
    lo = np.maximum(np.asarray(box[:3]), 0)
    hi = np.minimum(np.asarray(box[3:]), volume.shape)
    if np.any(hi <= lo):
        raise InputError(volume.source, f"crop box {box} is empty for shape {volume.shape}")
    array = volume.array[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    return _with_grid(volume, array, _shift_affine(volume.affine, tuple(lo)))


def _crop_pad_plan(size: int, target: int) -> tuple[int, slice]:
    """MONAI ResizeWithPadOrCrop along one axis: (first kept input index, destination slice)."""
    if target <= size:
        return size // 2 - target // 2, slice(0, target)
    before = (target - size) // 2
    return 0, slice(before, before + size)


def center_crop_pad(volume: Volume, shape: tuple[int, int, int], pad_value: float = 0.0) -> Volume:
    """Centre crop and/or pad to ``shape`` (MONAI ResizeWithPadOrCrop positions)."""
    plans = [_crop_pad_plan(n, t) for n, t in zip(volume.shape, shape)]
    src = tuple(slice(first, first + (dst.stop - dst.start)) for first, dst in plans)
    shift = tuple(first - dst.start for first, dst in plans)
    affine = _shift_affine(volume.affine, shift)
    if all(dst == slice(0, t) for (_, dst), t in zip(plans, shape)):
        return _with_grid(volume, volume.array[(slice(None), *src)], affine)
    out = np.full((volume.array.shape[0], *shape), pad_value, dtype=volume.array.dtype)
    out[(slice(None), *(dst for _, dst in plans))] = volume.array[(slice(None), *src)]
    return _with_grid(volume, out, affine)


@dataclass(frozen=True)
class _AxisMap:
    """Output voxel ``i`` of one axis samples input coordinate ``offset + step * (first + i)``."""

    size_in: int
    step: float
    offset: float = 0.0
    first: int = 0
    count: int = 0

    def taps(self, nearest: bool, flipped: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Input indices (i0, i1) and weight of i1 per output voxel; border values repeat."""
        n = self.size_in
        coords = self.offset + self.step * (self.first + np.arange(self.count, dtype=np.float64))
        coords = np.clip(coords, 0.0, n - 1.0)
        if nearest:
            i0 = np.floor(coords + 0.5).astype(np.int64)
            i1, weight = i0, None
        else:
            i0 = np.minimum(np.floor(coords), max(n - 2, 0)).astype(np.int64)
            i1 = np.minimum(i0 + 1, n - 1)
            weight = coords - i0
        if flipped:  # index the un-flipped memory view instead
            i0, i1 = n - 1 - i0, n - 1 - i1
        return i0, i1, weight


def _interp_axis(data: torch.Tensor, axis: int, taps: tuple[np.ndarray, np.ndarray, np.ndarray | None]) -> torch.Tensor:
    """Linear (float32) or, when the weight is None, nearest interpolation along one axis."""
    import torch

    i0, i1, weight = taps
    a = data.index_select(axis, torch.from_numpy(i0))
    if weight is None:
        return a
    b = data.index_select(axis, torch.from_numpy(i1))
    shape = [1] * data.ndim
    shape[axis] = -1
    return torch.lerp(a.float(), b.float(), torch.from_numpy(weight.astype(np.float32)).view(shape))


def _resample_into(array: np.ndarray, maps: list[_AxisMap], out: np.ndarray, nearest: bool) -> None:
    """Write the resampled region described by ``maps`` into ``out`` (C, *counts).

    Hand-written separable interpolation on torch tensors rather than ``grid_sample`` or
    ``scipy.ndimage``: for an axis-aligned zoom, trilinear interpolation is exactly the product
    of three 1-D linear interpolations, which needs no (X, Y, Z, 3) sampling grid (3x the output
    in memory), reads the int16 input directly (float32 temporaries are one output slab at a
    time), touches only the input voxels the output needs, and runs multi-threaded under
    ``torch.set_num_threads`` (scipy.ndimage is single-threaded).
    """
    import torch

    if not array.dtype.isnative:  # e.g. big-endian ANALYZE/NIfTI data; torch needs native order
        array = array.astype(array.dtype.newbyteorder("="))
    # torch cannot wrap negative strides: undo flips in memory and mirror the indices instead.
    flipped = [False] * 3
    for axis in range(3):
        if array.strides[axis + 1] < 0:
            array = np.flip(array, axis=axis + 1)
            flipped[axis] = True
    taps = [m.taps(nearest, f) for m, f in zip(maps, flipped)]
    # Slab along the slowest-varying axis in memory (X for C order, Z for NIfTI's Fortran order)
    # so every slab is one contiguous block; the output view is permuted the same way.
    order = sorted(range(3), key=lambda a: -array.strides[a + 1])
    array = array.transpose(0, *(a + 1 for a in order))
    out = out.transpose(0, *(a + 1 for a in order))
    maps, taps = [maps[a] for a in order], [taps[a] for a in order]
    # After the slab axis, interpolate along the axis that shrinks the data most first
    # (ordered by step only, so a cropped region rounds exactly like the full grid).
    rest = sorted((1, 2), key=lambda a: -maps[a].step)
    source = torch.from_numpy(array)
    target = torch.from_numpy(out)
    chunk = max(1, _SLAB_VOXELS // max(1, array.shape[0] * array.shape[2] * array.shape[3]))
    with torch.no_grad():
        for start in range(0, maps[0].count, chunk):
            sel = slice(start, start + chunk)
            part = _interp_axis(source, 1, tuple(None if t is None else t[sel] for t in taps[0]))
            for axis in rest:
                part = _interp_axis(part, axis + 1, taps[axis])
            target[:, sel].copy_(part)


def _check_spacing(volume: Volume, spacing: tuple[float, float, float]) -> None:
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ConfigError(f"target_spacing must be three positive numbers, got {spacing}")


def _spacing_maps(volume: Volume, spacing: tuple[float, float, float]) -> tuple[list[_AxisMap], np.ndarray]:
    """Full-grid axis maps and the output affine for resampling to ``spacing`` (MONAI Spacing grid)."""
    _check_spacing(volume, spacing)
    ratios = np.asarray(spacing, dtype=np.float64) / np.asarray(volume.spacing)
    maps = [
        _AxisMap(n, float(r), count=int(round((n - 1) / r + 1.0)))
        for n, r in zip(volume.shape, ratios)
    ]
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * ratios
    return maps, affine


def _out_dtype(volume: Volume, is_mask: bool) -> np.dtype:
    """Masks keep their dtype (in native byte order); images become float32."""
    return volume.array.dtype.newbyteorder("=") if is_mask else np.dtype(np.float32)


def _run(volume: Volume, maps: list[_AxisMap], affine: np.ndarray, is_mask: bool) -> Volume:
    dtype = _out_dtype(volume, is_mask)
    out = np.empty((volume.array.shape[0], *(m.count for m in maps)), dtype=dtype)
    _resample_into(volume.array, maps, out, nearest=is_mask)
    return _with_grid(volume, out, affine)


def resample(volume: Volume, spacing: tuple[float, float, float], is_mask: bool = False) -> Volume:
    """Resample to ``spacing`` mm: linear (float32 out) for images, nearest (dtype kept) for masks.

    Output voxel 0 is input voxel 0 and the axis directions are kept, so the field of view is
    ``round((n - 1) * s / s' + 1)`` voxels per axis, as in MONAI ``Spacing``.
    """
    maps, affine = _spacing_maps(volume, spacing)
    return _run(volume, maps, affine, is_mask)


def resize_to_shape(volume: Volume, shape: tuple[int, int, int], is_mask: bool = False) -> Volume:
    """Interpolate the whole volume to ``shape`` (M3D style; aspect ratio not kept).

    Same sampling as ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)``
    (nearest for masks); voxel sizes grow by ``n / n'`` and the affine follows.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"shape must be three positive sizes, got {shape}")
    steps = [n / t for n, t in zip(volume.shape, shape)]
    maps = [_AxisMap(n, s, offset=0.5 * s - 0.5, count=t) for n, s, t in zip(volume.shape, steps, shape)]
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * np.asarray(steps)
    affine = _shift_affine(affine, tuple(0.5 - 0.5 / s for s in steps))
    return _run(volume, maps, affine, is_mask)


def _resample_crop_pad(
    volume: Volume, spacing: tuple[float, float, float], shape: tuple[int, int, int], pad_value: float, is_mask: bool
) -> Volume:
    """``center_crop_pad(resample(volume, spacing), shape)`` reading only the voxels kept."""
    maps, affine = _spacing_maps(volume, spacing)
    plans = [_crop_pad_plan(m.count, t) for m, t in zip(maps, shape)]
    maps = [dataclasses.replace(m, first=first, count=dst.stop - dst.start) for m, (first, dst) in zip(maps, plans)]
    dtype = _out_dtype(volume, is_mask)
    out = np.full((volume.array.shape[0], *shape), 0 if is_mask else pad_value, dtype=dtype)
    _resample_into(volume.array, maps, out[(slice(None), *(dst for _, dst in plans))], nearest=is_mask)
    affine = _shift_affine(affine, tuple(first - dst.start for first, dst in plans))
    return _with_grid(volume, out, affine)


def apply_spatial(volume: Volume, cfg: SpatialConfig, *, is_mask: bool = False) -> Volume:
    """Reorient to RAS+, crop (box or foreground), resample, then crop/pad or resize to ``cfg.shape``.

    Masks (``is_mask=True``) use nearest neighbour, keep their dtype and pad with 0; they cannot
    compute their own foreground box, so pass the image's box in ``cfg.box``.
    """
    volume = reorient_ras(volume)
    if cfg.box is not None:
        volume = crop_to_box(volume, cfg.box)
    elif cfg.crop_foreground != "none":
        if is_mask:
            raise ConfigError("a mask must be cropped with its image's box: set box=foreground_box(image)")
        volume = crop_to_box(volume, foreground_box(volume, cfg.crop_foreground, cfg.body_threshold_hu))
    if cfg.shape is not None and cfg.shape_mode == "crop_pad":
        if cfg.target_spacing is not None:
            return _resample_crop_pad(volume, cfg.target_spacing, cfg.shape, cfg.pad_value, is_mask)
        return center_crop_pad(volume, cfg.shape, 0 if is_mask else cfg.pad_value)
    if cfg.target_spacing is not None:
        volume = resample(volume, cfg.target_spacing, is_mask)
    if cfg.shape is not None:
        volume = resize_to_shape(volume, cfg.shape, is_mask)
    return volume


def apply_spatial_pair(image: Volume, mask: Volume | None, cfg: SpatialConfig) -> tuple[Volume, Volume | None]:
    """An image and its label map (on the same voxel grid) through the same spatial steps.

    The image's foreground box (``crop_foreground``) crops both; the mask is resampled,
    cropped/padded and resized by nearest neighbour, padded with 0 and keeps its dtype, so
    ``out_mask`` labels exactly the voxels of ``out_image`` (TorchIO's Subject idea).
    """
    if mask is None:
        return apply_spatial(image, cfg), None
    if mask.shape != image.shape or not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise InputError(mask.source, f"label map grid {list(mask.shape)} differs from its image's {list(image.shape)}")
    if cfg.box is None and cfg.crop_foreground != "none":
        box = foreground_box(reorient_ras(image), cfg.crop_foreground, cfg.body_threshold_hu)
        cfg = dataclasses.replace(cfg, box=box, crop_foreground="none")
    return apply_spatial(image, cfg), apply_spatial(mask, cfg, is_mask=True)
