"""Acquisition plane from the affine, and 2D slice extraction: selection, orientation, aspect."""

from __future__ import annotations

import os

import numpy as np
import pytest

from radlens.errors import InputError
from radlens.io.volume import Volume
from radlens.prepare.slicing import SliceConfig, acquisition_plane, extract_slices, plane_axis


def _normal(affine: np.ndarray) -> np.ndarray:
    """What the readers store as slice_normal: the world direction of the stored third axis."""
    column = np.asarray(affine, dtype=np.float64)[:3, 2]
    return column / np.linalg.norm(column)


def _rotation_x(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


@pytest.mark.parametrize(
    ("columns", "plane"),
    [
        # Axial, 1 x 1 x 5 mm: the thick axis is the slice axis (MR-CLIP gets this one right).
        (np.diag([1.0, 1.0, 5.0]), "axial"),
        # Axial with the largest spacing in-plane (3 mm): MR-CLIP's rule would say sagittal.
        (np.diag([3.0, 1.0, 0.8]), "axial"),
        # Axial stored inferior-to-superior flipped, and left-to-right (LPS-like) flipped.
        (np.diag([-0.7, -0.7, -1.25]), "axial"),
        # Coronal: stored axes R, S, P (slice axis along A/P).
        (np.array([[1.0, 0, 0], [0, 0, -4.0], [0, 1.0, 0]]), "coronal"),
        # Sagittal: stored axes A, S, L (slice axis along L/R), largest spacing in-plane.
        (np.array([[0, 0, -1.0], [2.0, 0, 0], [0, 2.0, 0]]), "sagittal"),
        # Permuted stored orders: (R, S, A) is a coronal stack, (S, A, R) a sagittal one.
        (np.array([[1.2, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]), "coronal"),
        (np.array([[0, 0, 0.9], [0, 1.0, 0], [1.0, 0, 0]]), "sagittal"),
        # Tilted 20 degrees (within tolerance) and 40 degrees (oblique).
        (_rotation_x(20) @ np.diag([1.0, 1.0, 3.0]), "axial"),
        (_rotation_x(40) @ np.diag([1.0, 1.0, 3.0]), "oblique"),
    ],
)
def test_acquisition_plane_from_affine(columns: np.ndarray, plane: str) -> None:
    affine = np.eye(4)
    affine[:3, :3] = columns
    assert acquisition_plane(_normal(affine)) == plane


def test_acquisition_plane_on_a_real_header_and_tolerance() -> None:
    import nibabel as nib
    from nibabel.testing import data_path

    affine = nib.load(os.path.join(data_path, "anatomical.nii")).affine
    assert acquisition_plane(_normal(affine)) == "axial"
    tilted = _rotation_x(40) @ np.array([0.0, 0.0, 1.0])
    assert acquisition_plane(tilted, oblique_tolerance_deg=45.0) == "axial"
    with pytest.raises(ValueError):
        acquisition_plane((0.0, 0.0, 0.0))


def test_plane_axis() -> None:
    assert [plane_axis(p) for p in ("sagittal", "coronal", "axial")] == [0, 1, 2]
    with pytest.raises(ValueError):
        plane_axis("oblique")


def _body(shape: tuple[int, int, int] = (10, 12, 20), spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)) -> Volume:
    """Background 0, a block of signal in axial slices 5..14 covering 20% of each slice."""
    array = np.zeros((1, *shape), dtype=np.float32)
    array[0, 2:6, 3:9, 5:15] = 1.0
    return Volume(array, np.diag([*spacing, 1.0]), slice_normal=np.array([0.0, 0.0, 1.0]))


def test_extract_slices_selection_counts() -> None:
    vol = _body()
    slices, rows = extract_slices(vol, SliceConfig(slice_shape=(16, 16)))
    assert slices.shape == (10, 16, 16) and slices.dtype == np.float32
    assert [r["slice_index"] for r in rows] == list(range(5, 15))
    assert all(r["plane"] == "axial" and r["lesion"] == -1 for r in rows)
    assert rows[0]["foreground"] == pytest.approx(24 / 120)
    assert rows[0]["position"] == pytest.approx(5 / 19)
    _, rows = extract_slices(vol, SliceConfig(position_window=(0.5, 1.0), slice_shape=(16, 16)))
    assert [r["slice_index"] for r in rows] == [10, 11, 12, 13, 14]
    _, rows = extract_slices(vol, SliceConfig(every=2, slice_shape=(16, 16)))
    assert [r["slice_index"] for r in rows] == [6, 8, 10, 12, 14]
    _, rows = extract_slices(vol, SliceConfig(min_foreground=0.0, slice_shape=(16, 16)))
    assert len(rows) == 20
    empty, rows = extract_slices(vol, SliceConfig(min_foreground=0.5, slice_shape=(16, 16)))
    assert empty.shape == (0, 16, 16) and rows == []


def test_pure_noise_edge_slices_are_dropped_unless_asked() -> None:
    """MRI: Rician-like noise in the air everywhere, the head in slices 5..14 only."""
    rng = np.random.default_rng(0)
    vol = _body()
    vol.array[...] = vol.array * 100 + np.abs(rng.normal(0, 3, vol.array.shape)).astype(np.float32)
    _, rows = extract_slices(vol, SliceConfig(slice_shape=(16, 16)))
    assert [r["slice_index"] for r in rows] == list(range(5, 15))  # the noise slices are gone
    assert rows[0]["foreground"] == pytest.approx(24 / 120)
    _, kept = extract_slices(vol, SliceConfig(min_foreground=0.0, slice_shape=(16, 16)))
    assert len(kept) == 20  # asked for every slice
    _, above_minimum = extract_slices(vol, SliceConfig(foreground_level=0.0, slice_shape=(16, 16)))
    assert len(above_minimum) == 20 and min(r["foreground"] for r in above_minimum) > 0.9  # noise counted
    with pytest.raises(ValueError, match="foreground_level"):
        extract_slices(vol, SliceConfig(foreground_level=1.5))


def test_extract_slices_lesion_flags_from_mask() -> None:
    vol = _body()
    labels = np.zeros_like(vol.array, dtype=np.uint8)
    labels[0, 3, 4, 8:11] = 1
    _, rows = extract_slices(vol, SliceConfig(slice_shape=(16, 16)), mask=Volume(labels, vol.affine))
    assert {r["slice_index"]: r["lesion"] for r in rows} == {i: int(8 <= i <= 10) for i in range(5, 15)}


@pytest.mark.parametrize(
    ("plane", "marker", "pixel"),
    [
        # Right-anterior-superior corner voxel (max x, y, z) in each display convention.
        ("axial", (5, 6, 7), (0, 0)),  # anterior up, patient's right on the left
        ("coronal", (5, 6, 7), (0, 0)),  # superior up, right on the left
        ("sagittal", (5, 6, 7), (0, 0)),  # superior up, anterior on the left
        # Left-posterior-inferior corner (0, 0, 0) ends bottom-right.
        ("axial", (0, 0, 0), (-1, -1)),
        ("sagittal", (0, 0, 0), (-1, -1)),
    ],
)
def test_display_orientation(plane: str, marker: tuple[int, int, int], pixel: tuple[int, int]) -> None:
    array = np.zeros((1, 6, 7, 8), dtype=np.float32)
    array[(0, *marker)] = 1.0
    vol = Volume(array, np.eye(4))
    in_plane = [n for a, n in enumerate(vol.shape) if a != plane_axis(plane)]
    shape = (in_plane[1], in_plane[0])  # (H, W) with no resize needed
    slices, rows = extract_slices(vol, SliceConfig(plane=plane, min_foreground=1e-6, slice_shape=shape))
    assert [r["slice_index"] for r in rows] == [marker[plane_axis(plane)]]
    assert slices[0][pixel] == 1.0 and slices[0].sum() == 1.0


def test_slices_keep_physical_aspect() -> None:
    # 1 x 1 x 5 mm axial stack cut coronally: 20 x 5 slices of 1 x 5 mm pixels are 25 mm tall.
    array = np.ones((1, 20, 4, 5), dtype=np.float32)
    array[0, 0, 3, 0] = 0.0  # the volume minimum, used as padding
    vol = Volume(array, np.diag([1.0, 1.0, 5.0, 1.0]))
    slices, rows = extract_slices(vol, SliceConfig(plane="coronal", min_foreground=0.0, slice_shape=(50, 50)))
    assert len(rows) == 4
    first = slices[0]  # coronal slice y=0: all ones, 20 mm wide -> 40 columns, 5 padded each side
    np.testing.assert_allclose(first[:, 5:45], 1.0, atol=1e-6)
    assert (first[:, :5] == 0).all() and (first[:, 45:] == 0).all()


def test_oblique_acquisition_is_cut_along_the_closest_axis_with_a_warning() -> None:
    vol = _body()
    vol.slice_normal = _rotation_x(40) @ np.array([0.0, 0.0, 1.0])
    with pytest.warns(UserWarning, match="oblique"):
        _, rows = extract_slices(vol, SliceConfig(slice_shape=(16, 16)))
    assert rows and all(r["plane"] == "axial" for r in rows)


def test_extract_slices_bad_inputs() -> None:
    vol = _body()
    with pytest.raises(InputError, match="single-channel"):
        extract_slices(Volume(np.ones((2, 4, 4, 4)), np.eye(4), slice_normal=np.array([0, 0, 1.0])), SliceConfig())
    with pytest.raises(InputError, match="mask shape"):
        extract_slices(vol, SliceConfig(), mask=Volume(np.ones((1, 3, 3, 3)), np.eye(4)))
    with pytest.raises(InputError, match="slice_normal"):
        extract_slices(Volume(vol.array, vol.affine), SliceConfig())
    with pytest.raises(ValueError):
        extract_slices(vol, SliceConfig(every=0))
