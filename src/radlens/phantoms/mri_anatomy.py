"""Per-subject brain anatomy: nilearn's MNI152 tissue maps, smoothly deformed, with optional lesions.

A subject is a set of tissue-fraction maps on the template grid (RAS+, ``resolution`` mm).
Every subject gets its own random affine (rotation, scaling, shift) and a low-frequency
non-linear warp, so subjects differ and a per-subject split is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# How far outside the brain mask the scalp (fat) shell lies, mm; the gap between is skull (no signal).
SCALP_MM = (6.0, 11.0)


@dataclass
class Anatomy:
    """Tissue fractions (each ``(X, Y, Z)`` float32, summing to <= 1 per voxel) on a RAS+ grid."""

    fractions: dict[str, np.ndarray]
    affine: np.ndarray
    lesion_count: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return next(iter(self.fractions.values())).shape  # type: ignore[return-value]

    @property
    def spacing(self) -> float:
        return float(abs(self.affine[0, 0]))


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor``^3 blocks (cropping the remainder).

    Pooling the 1 mm maps gives true partial-volume fractions at the coarser size, where nilearn's
    ``resolution=2`` point-samples them (aliasing thin cortex) and costs a resampling per map.
    """
    if factor == 1:
        return volume
    crop = [s - s % factor for s in volume.shape]
    v = volume[: crop[0], : crop[1], : crop[2]]
    blocks = v.reshape(crop[0] // factor, factor, crop[1] // factor, factor, crop[2] // factor, factor)
    return blocks.mean(axis=(1, 3, 5))


@lru_cache(maxsize=2)
def template_anatomy(resolution: int, scalp: bool = True) -> Anatomy:
    """GM, WM, CSF (= brain mask - GM - WM) and optionally a scalp-fat shell from nilearn's packaged MNI152.

    The maps are read at 1 mm and block-averaged to ``resolution`` mm (any integer). The template is
    skull-stripped; the scalp shell (a band at :data:`SCALP_MM` from the brain mask, padded onto the
    grid) gives STIR and T1w images the nulled/bright fat they show clinically. The grid is cropped to
    the head with a small margin, which keeps arrays small.
    """
    from nilearn import datasets
    from scipy import ndimage

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    maps = [np.asarray(gm_img.get_fdata(), dtype=np.float32),
            np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32),
            np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), dtype=np.float32)]
    gm, wm, mask = (_block_mean(m, resolution) for m in maps)
    affine = np.asarray(gm_img.affine, dtype=np.float64) @ np.diag([resolution] * 3 + [1])
    affine[:3, 3] += np.asarray(gm_img.affine)[:3, :3] @ np.full(3, (resolution - 1) / 2.0)
    gm, wm = gm * mask, wm * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    total = np.maximum(gm + wm + csf, 1.0)
    fractions = {"GM": gm / total, "WM": wm / total, "CSF": csf / total}
    pad = int(np.ceil(SCALP_MM[1] / resolution)) + 2
    fractions = {k: np.pad(v, pad) for k, v in fractions.items()}
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    if scalp:
        outside = np.pad(mask, pad) < 0.5
        dist = ndimage.distance_transform_edt(outside, sampling=resolution)
        shell = ((dist > SCALP_MM[0]) & (dist <= SCALP_MM[1])).astype(np.float32)
        fractions["fat"] = ndimage.gaussian_filter(shell, 0.7)
    head = sum(fractions.values()) > 0.01
    lo = np.maximum(np.argwhere(head).min(axis=0) - 2, 0)
    hi = np.argwhere(head).max(axis=0) + 3
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine[:3, 3] += affine[:3, :3] @ lo
    return Anatomy({k: np.ascontiguousarray(v[box], dtype=np.float32) for k, v in fractions.items()}, affine)


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float, nodes: int = 4) -> np.ndarray:
    """A random low-frequency field with RMS about ``amplitude``: a sum of the lowest ``nodes`` cosines per axis.

    Built separably (one small tensordot per axis), far cheaper than upsampling a coarse grid.
    """
    weights = 1.0 / (1.0 + np.add.outer(np.add.outer(np.arange(nodes), np.arange(nodes)), np.arange(nodes)))
    field = rng.normal(0.0, 1.0, size=(nodes,) * 3) * weights
    for n in shape:
        basis = np.cos(np.pi * np.outer(np.arange(nodes), np.arange(n) + 0.5) / n) * np.sqrt(2.0)
        basis[0] = 1.0
        field = np.tensordot(field, basis, axes=([0], [0]))
    return (field * (amplitude / np.sqrt((weights**2).sum()))).astype(np.float32)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()


def deform(
    anatomy: Anatomy,
    rng: np.random.Generator,
    rotation_deg: float = 10.0,
    scale: float = 0.10,
    shift_mm: float = 5.0,
    warp_mm: float = 3.0,
) -> Anatomy:
    """A subject: the anatomy pulled through a random affine plus a smooth warp (same grid)."""
    from scipy import ndimage

    shape = anatomy.shape
    centre = (np.array(shape) - 1) / 2.0
    # Output voxel -> source voxel: inverse of a rotation+scaling about the grid centre, plus a shift.
    linear = _rotation(rng.uniform(-rotation_deg, rotation_deg, 3)) @ np.diag(rng.uniform(1 - scale, 1 + scale, 3))
    inverse = np.linalg.inv(linear)
    shift = rng.uniform(-shift_mm, shift_mm, 3) / anatomy.spacing
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    source = inverse @ (grid - centre[:, None]) + centre[:, None] + shift[:, None]
    warp = np.stack([smooth_field(shape, rng, warp_mm / anatomy.spacing) for _ in range(3)])
    source = source.reshape(3, *shape) + warp
    fractions = {
        k: ndimage.map_coordinates(v, source, order=1, mode="constant", cval=0.0).astype(np.float32)
        for k, v in anatomy.fractions.items()
    }
    return Anatomy(fractions, anatomy.affine.copy())


def add_lesions(
    anatomy: Anatomy, rng: np.random.Generator, count: int, radius_mm: tuple[float, float] = (2.0, 6.0)
) -> Anatomy:
    """White-matter lesions: ``count`` soft-edged random ellipsoids centred in deep white matter.

    The lesion fraction replaces the white matter it covers, so fractions still sum to <= 1.
    """
    wm = anatomy.fractions["WM"]
    lesion = np.zeros_like(wm)
    candidates = np.argwhere(wm > 0.9)
    if count == 0 or len(candidates) == 0:
        return Anatomy({**anatomy.fractions, "lesion": lesion}, anatomy.affine, 0)
    reach = int(np.ceil(radius_mm[1] / anatomy.spacing)) + 2
    for centre in candidates[rng.choice(len(candidates), size=count, replace=False)]:
        axes = rng.uniform(*radius_mm, size=3)
        rot = _rotation(rng.uniform(-90, 90, 3))
        lo = np.maximum(centre - reach, 0)
        box = tuple(slice(a, b) for a, b in zip(lo, np.minimum(centre + reach + 1, wm.shape)))
        local = np.indices(lesion[box].shape, dtype=np.float32).reshape(3, -1) + (lo - centre)[:, None]
        r = np.linalg.norm((rot.T @ (local * anatomy.spacing)) / axes[:, None], axis=0).reshape(lesion[box].shape)
        # Soft edge about one voxel wide, so partial volume at the border is physical.
        inside = np.clip((1.0 - r) * (axes.mean() / anatomy.spacing) + 0.5, 0.0, 1.0)
        lesion[box] = np.maximum(lesion[box], inside.astype(np.float32))
    lesion *= wm
    fractions = {**anatomy.fractions, "WM": wm - lesion, "lesion": lesion}
    return Anatomy(fractions, anatomy.affine, count)


def make_subject(
    resolution: int,
    rng: np.random.Generator,
    lesion_count: int,
    scalp: bool = True,
    rotation_deg: float = 10.0,
    scale: float = 0.10,
    warp_mm: float = 3.0,
) -> Anatomy:
    """Template -> deformed subject -> lesions: the anatomy every series of a subject is imaged from."""
    subject = deform(template_anatomy(resolution, scalp), rng, rotation_deg, scale, warp_mm=warp_mm)
    return add_lesions(subject, rng, lesion_count)
