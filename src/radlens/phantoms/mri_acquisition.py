"""Acquisition realism: slice geometry, bias field, Rician noise and the stored voxel order.

A series is imaged from a subject's noise-free signal map (RAS+ grid): thick 2D slices average the
signal over each slab along the slice axis; a 3D acquisition keeps the isotropic grid. The stored
array is then randomly flipped/permuted with the affine updated to match, as scanners and converters
do, so that readers must use the affine rather than assume an axis order.
"""

from __future__ import annotations

import numpy as np

from radlens.phantoms.mri_anatomy import smooth_field

PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def _slab_weights(n_in: int, spacing: float, thickness: float, subsamples: int = 7) -> tuple[np.ndarray, float]:
    """Matrix (n_out, n_in) averaging a linearly interpolated profile over each slab, and the first centre (mm).

    Slab ``j`` covers ``[c_j - t/2, c_j + t/2]``; it is sampled at ``subsamples`` points with linear
    interpolation between input voxels, a rectangular slice profile.
    """
    extent = (n_in - 1) * spacing
    n_out = max(int(extent // thickness), 1)
    first = (extent - (n_out - 1) * thickness) / 2.0
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    offsets = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    for j in range(n_out):
        for u in offsets:
            pos = np.clip((first + j * thickness + u * thickness) / spacing, 0, n_in - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, n_in - 1)
            weights[j, lo] += (1.0 - (pos - lo)) / subsamples
            weights[j, hi] += (pos - lo) / subsamples
    return weights, first


def slice_volume(volume: np.ndarray, affine: np.ndarray, axis: int, thickness: float) -> tuple[np.ndarray, np.ndarray]:
    """Thick slices along ``axis`` (RAS voxel axis): slab-averaged array and its affine."""
    spacing = float(np.linalg.norm(affine[:3, axis]))
    if thickness <= spacing * 1.001:
        return volume, affine
    weights, first = _slab_weights(volume.shape[axis], spacing, thickness)
    moved = np.tensordot(weights, np.moveaxis(volume, axis, 0), axes=1)
    out = np.moveaxis(moved, 0, axis).astype(np.float32)
    new_affine = affine.copy()
    new_affine[:3, 3] += affine[:3, axis] * (first / spacing)
    new_affine[:3, axis] *= thickness / spacing
    return out, new_affine


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative receive-coil bias, ``exp(field)`` with the field's spread about ``strength``."""
    return np.exp(smooth_field(shape, rng, strength, nodes=3)).astype(np.float32)


def rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician), as a magnitude image has."""
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imag = rng.normal(0.0, sigma, signal.shape)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def random_orientation(rng: np.random.Generator, slice_axis: int, any_axis: bool = False) -> np.ndarray:
    """A nibabel orientation array (input axis -> [output axis, +-1]) with random flips.

    Scanners and dcm2niix store the slice axis last and may swap the in-plane axes; a file that a
    tool has reoriented (``any_axis``) can hold the slice axis anywhere.
    """
    if any_axis:
        perm = rng.permutation(3)
    else:
        in_plane = [a for a in range(3) if a != slice_axis]
        perm = np.empty(3, dtype=int)
        perm[in_plane] = rng.permutation(2)
        perm[slice_axis] = 2
    flips = np.where(rng.random(3) < 0.5, -1.0, 1.0)
    return np.stack([perm.astype(float), flips], axis=1)


def reorient(array: np.ndarray, affine: np.ndarray, ornt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store ``array`` in the voxel order ``ornt`` and return the affine that keeps every voxel's world position."""
    from nibabel import orientations

    stored = np.ascontiguousarray(orientations.apply_orientation(array, ornt))
    return stored, affine @ orientations.inv_ornt_aff(ornt, array.shape)


def to_scanner_units(image: np.ndarray, peak: float = 3000.0) -> np.ndarray:
    """Arbitrary-unit int16 magnitude image with its 99.5th percentile at ``peak``, as scanners store."""
    hi = float(np.percentile(image, 99.5))
    scaled = image * (peak / hi if hi > 0 else 1.0)
    return np.clip(np.rint(scaled), 0, 32767).astype(np.int16)
