"""Acquisition geometry and noise of the MRI phantom: slabs, stored voxel order, Rician noise."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from radlens.phantoms.mri_acquisition import (
    random_orientation,
    reorient,
    rician_noise,
    slice_volume,
    to_scanner_units,
)


def _world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ index + affine[:3, 3]


def test_random_stored_order_keeps_every_voxel_at_its_world_position() -> None:
    rng = np.random.default_rng(0)
    array = rng.random((7, 9, 11)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 20.0]
    point = np.array([2, 6, 4])
    seen = set()
    for case in range(12):
        ornt = random_orientation(rng, slice_axis=case % 3, any_axis=case % 2 == 0)
        stored, stored_affine = reorient(array, affine, ornt)
        seen.add("".join(nib.aff2axcodes(stored_affine)))
        # The voxel holding the same value sits at the same world coordinate.
        where = np.argwhere(stored == array[tuple(point)])[0]
        np.testing.assert_allclose(_world(stored_affine, where), _world(affine, point))
        # A NIfTI round trip (nibabel) restores the RAS array and affine.
        canonical = nib.as_closest_canonical(nib.Nifti1Image(stored, stored_affine))
        np.testing.assert_array_equal(np.asarray(canonical.dataobj), array)
        np.testing.assert_allclose(canonical.affine, affine)
    assert len(seen) > 4


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_scanner_like_orders_store_the_slice_axis_last(slice_axis: int) -> None:
    rng = np.random.default_rng(slice_axis)
    orders = [random_orientation(rng, slice_axis) for _ in range(20)]
    assert all(o[slice_axis, 0] == 2 for o in orders)
    assert len({tuple(o[:, 0]) for o in orders}) == 2  # the in-plane axes may swap
    assert len({tuple(o[:, 1]) for o in orders}) > 2  # and flip
    reoriented = {int(random_orientation(rng, slice_axis, any_axis=True)[slice_axis, 0]) for _ in range(30)}
    assert reoriented == {0, 1, 2}


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_thick_slices_average_slabs_and_keep_positions(axis: int) -> None:
    shape = (20, 22, 24)
    ramp = np.indices(shape)[axis].astype(np.float32)  # value = voxel index along the axis
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, -22.0, -24.0]
    sliced, new_affine = slice_volume(ramp, affine, axis, thickness=5.0)
    assert sliced.shape[axis] == int((shape[axis] - 1) * 2.0 // 5.0)
    assert np.linalg.norm(new_affine[:3, axis]) == pytest.approx(5.0)
    # A linear ramp averaged over a symmetric slab equals the ramp at the slab centre.
    centres = np.arange(sliced.shape[axis])
    world = (new_affine[:3, axis][:, None] * centres + new_affine[:3, 3][:, None])[axis]
    expected_index = (world - affine[axis, 3]) / 2.0
    np.testing.assert_allclose(np.moveaxis(sliced, axis, 0)[:, 0, 0], expected_index, atol=1e-4)


def test_isotropic_acquisition_is_left_unchanged() -> None:
    volume = np.ones((4, 4, 4), np.float32)
    out, affine = slice_volume(volume, np.eye(4) * 2 + np.diag([0, 0, 0, -1]), 2, 2.0)
    assert out is volume and affine[2, 2] == 2.0


def test_rician_noise_biases_the_background_upwards() -> None:
    rng = np.random.default_rng(1)
    noisy = rician_noise(np.zeros(20000, np.float32), 1.0, rng)
    assert noisy.min() >= 0.0
    assert noisy.mean() == pytest.approx(np.sqrt(np.pi / 2), rel=0.03)  # Rayleigh mean
    bright = rician_noise(np.full(20000, 50.0, np.float32), 1.0, rng)
    assert bright.mean() == pytest.approx(50.0, abs=0.1)


def test_scanner_units_are_int16_with_a_fixed_peak() -> None:
    image = np.linspace(0, 7.0, 1000, dtype=np.float32)
    stored = to_scanner_units(image)
    assert stored.dtype == np.int16
    assert np.percentile(stored, 99.5) == pytest.approx(3000, abs=2)
