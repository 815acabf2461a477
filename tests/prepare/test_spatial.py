"""Spatial preprocessing keeps world coordinates, labels, and matches resample-then-crop."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from radlens.errors import ConfigError, InputError
from radlens.io.volume import Volume
from radlens.prepare.spatial import (
    SpatialConfig,
    apply_spatial,
    center_crop_pad,
    crop_to_box,
    foreground_box,
    reorient_ras,
    resample,
    resize_to_shape,
)


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (affine[:3, :3] @ np.asarray(ijk, dtype=np.float64).T).T + affine[:3, 3]


def _index_volume(shape: tuple[int, int, int] = (9, 8, 7), affine: np.ndarray | None = None) -> Volume:
    """Each voxel stores a unique integer so its grid position can be traced after crops/flips."""
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(1, *shape)
    if affine is None:
        affine = np.diag([0.7, 0.8, 1.25, 1.0])
        affine[:3, 3] = [-10.0, 5.0, 30.0]
    return Volume(array, affine)


@pytest.fixture(scope="module")
def anatomical() -> Volume:
    """nibabel's packaged anatomical.nii: int16 big-endian, stored LAS."""
    import nibabel as nib
    from nibabel.testing import data_path

    img = nib.load(os.path.join(data_path, "anatomical.nii"))
    return Volume(np.asarray(img.dataobj)[None], img.affine)


def _same_world_per_value(a: Volume, b: Volume) -> None:
    """Every voxel value present in both volumes sits at the same world position."""
    for vol_a, vol_b in ((a, b), (b, a)):
        values = vol_a.array[0]
        idx = np.argwhere(np.isin(values, vol_b.array[0]))[:50]
        for ijk in idx:
            match = np.argwhere(vol_b.array[0] == values[tuple(ijk)])[0]
            np.testing.assert_allclose(_world(vol_a.affine, ijk), _world(vol_b.affine, match), atol=1e-9)


def test_reorient_ras_keeps_world_positions_and_copies_nothing() -> None:
    affine = np.array([[0, 0, -1.5, 20], [-0.7, 0, 0, 3], [0, 0.9, 0, -7], [0, 0, 0, 1.0]])  # stored P I L
    vol = _index_volume(affine=affine)
    ras = reorient_ras(vol)
    assert ras.orientation == "RAS"
    assert ras.shape == (7, 9, 8)
    assert np.shares_memory(ras.array, vol.array)
    _same_world_per_value(vol, ras)
    assert reorient_ras(ras) is ras


def test_crop_and_pad_keep_world_positions() -> None:
    vol = _index_volume()
    cropped = crop_to_box(vol, (2, 1, 0, 7, 6, 4))
    assert cropped.shape == (5, 5, 4)
    _same_world_per_value(vol, cropped)
    padded = center_crop_pad(vol, (12, 4, 7), pad_value=-1)
    assert padded.shape == (12, 4, 7)
    assert (padded.array[:, :1] == -1).all() and (padded.array[:, -2:] == -1).all()
    _same_world_per_value(vol, padded)


def test_center_crop_pad_positions_match_monai() -> None:
    import torch
    from monai.transforms import ResizeWithPadOrCrop

    vol = _index_volume((9, 8, 5))
    ours = center_crop_pad(vol, (4, 11, 5), pad_value=-3)
    theirs = ResizeWithPadOrCrop((4, 11, 5), value=-3)(torch.from_numpy(vol.array))
    np.testing.assert_array_equal(ours.array, np.asarray(theirs))


def test_resample_preserves_world_of_voxel_centres() -> None:
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(size=(1, 10, 9, 8)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    out = resample(vol, (0.5, 0.5, 1.0))
    assert out.spacing == pytest.approx((0.5, 0.5, 1.0))
    assert out.shape == (19, 17, 15)
    # Every second output voxel lands on an input voxel centre: values and world agree.
    np.testing.assert_allclose(out.array[:, ::2, ::2, ::2], vol.array, atol=1e-5)
    np.testing.assert_allclose(_world(out.affine, [[2, 4, 6]]), _world(vol.affine, [[1, 2, 3]]))
    # In between, linear interpolation of the two neighbours.
    np.testing.assert_allclose(out.array[0, 1, 0, 0], vol.array[0, :2, 0, 0].mean(), atol=1e-5)


def test_resample_matches_monai_spacing_on_a_real_file(anatomical: Volume) -> None:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    ours = resample(reorient_ras(anatomical), (2.3, 2.1, 3.3))
    image = MetaTensor(torch.from_numpy(anatomical.array.astype(np.float32)), affine=torch.from_numpy(anatomical.affine))
    theirs = Spacing((2.3, 2.1, 3.3))(Orientation(axcodes="RAS", labels=None)(image))
    assert ours.shape == tuple(theirs.shape[1:])
    np.testing.assert_allclose(ours.array, theirs.numpy(), atol=1e-2)
    np.testing.assert_allclose(ours.affine, theirs.affine.numpy(), atol=1e-6)


def test_nearest_resampling_keeps_mask_labels_and_dtype() -> None:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    labels = np.zeros((1, 12, 12, 6), dtype=np.uint8)
    labels[0, 2:6, 3:9, 1:4] = 3
    labels[0, 7:11, 1:5, 2:6] = 7
    mask = Volume(labels, np.diag([0.8, 0.8, 2.0, 1.0]))
    out = resample(mask, (1.1, 0.6, 0.9), is_mask=True)
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) == {0, 3, 7}
    theirs = Spacing((1.1, 0.6, 0.9), mode="nearest")(
        MetaTensor(torch.from_numpy(labels.astype(np.float32)), affine=torch.from_numpy(mask.affine))
    )
    np.testing.assert_array_equal(out.array, theirs.numpy())


@pytest.mark.parametrize("shape", [(9, 30, 5), (6, 6, 6), (40, 41, 17)])
def test_crop_before_resample_equals_resample_then_crop(anatomical: Volume, shape: tuple[int, int, int]) -> None:
    cfg = SpatialConfig(target_spacing=(1.7, 2.9, 2.2), shape=shape, pad_value=-7.0)
    fused = apply_spatial(anatomical, cfg)
    reference = center_crop_pad(resample(reorient_ras(anatomical), cfg.target_spacing), shape, pad_value=-7.0)
    assert fused.array.dtype == np.float32
    np.testing.assert_array_equal(fused.array, reference.array)
    np.testing.assert_allclose(fused.affine, reference.affine, atol=1e-9)


def test_crop_before_resample_for_masks_pads_with_zero() -> None:
    mask = Volume((np.arange(6 * 7 * 8).reshape(1, 6, 7, 8) % 3).astype(np.int16), np.eye(4))
    cfg = SpatialConfig(target_spacing=(0.6, 1.3, 0.9), shape=(12, 4, 5), pad_value=-1000)
    fused = apply_spatial(mask, cfg, is_mask=True)
    reference = center_crop_pad(resample(mask, cfg.target_spacing, is_mask=True), cfg.shape)
    assert fused.array.dtype == np.int16
    np.testing.assert_array_equal(fused.array, reference.array)


def test_foreground_crop_then_box_reused_for_mask() -> None:
    array = np.full((1, 20, 18, 10), -1000, dtype=np.int16)
    array[0, 4:15, 3:9, 2:8] = 40
    image = Volume(array, np.eye(4), hu=True)
    box = foreground_box(image, "body", -500)
    assert box == (4, 3, 2, 15, 9, 8)
    out = apply_spatial(image, SpatialConfig(crop_foreground="body"))
    assert out.shape == (11, 6, 6) and (out.array == 40).all()
    mask = Volume((array > 0).astype(np.uint8), np.eye(4))
    assert apply_spatial(mask, SpatialConfig(box=box), is_mask=True).shape == (11, 6, 6)
    with pytest.raises(ConfigError):
        apply_spatial(mask, SpatialConfig(crop_foreground="nonzero"), is_mask=True)


def test_resize_to_shape_matches_torch_trilinear() -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(size=(2, 11, 7, 9)).astype(np.float32), np.diag([1.0, 2.0, 3.0, 1.0]))
    out = resize_to_shape(vol, (4, 10, 9))
    expected = F.interpolate(torch.from_numpy(vol.array)[None], size=(4, 10, 9), mode="trilinear", align_corners=False)
    np.testing.assert_allclose(out.array, expected[0].numpy(), atol=1e-5)
    # The volume still covers the same field of view: outer voxel edges are unchanged.
    np.testing.assert_allclose(_world(out.affine, [[-0.5, -0.5, -0.5]]), _world(vol.affine, [[-0.5, -0.5, -0.5]]))
    np.testing.assert_allclose(_world(out.affine, [[3.5, 9.5, 8.5]]), _world(vol.affine, [[10.5, 6.5, 8.5]]))


def test_apply_spatial_resize_mode_and_metadata_kept(anatomical: Volume) -> None:
    vol = dataclasses.replace(anatomical, hu=True, slice_normal=np.array([0.0, 0.0, 1.0]))
    out = apply_spatial(vol, SpatialConfig(shape=(8, 16, 16), shape_mode="resize"))
    assert out.shape == (8, 16, 16)
    assert out.hu and out.slice_normal is vol.slice_normal


def test_bad_inputs_raise() -> None:
    vol = _index_volume()
    with pytest.raises(ConfigError):
        resample(vol, (0.0, 1.0, 1.0))
    with pytest.raises(InputError):
        crop_to_box(vol, (5, 5, 5, 5, 6, 6))
    empty = Volume(np.zeros((1, 4, 4, 4), dtype=np.int16), np.eye(4))
    with pytest.raises(InputError, match="no foreground"):
        foreground_box(empty, "nonzero")
