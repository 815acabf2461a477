"""Intensity randomisation for contrast-agnostic segmentation: per-label remaps, MONAI transforms, seeding, dataset hook."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from support.mask_layouts import write_mask_bids

from radlens.data.intensity_augment import IntensityAugment, IntensityAugmentConfig
from radlens.data.masks import ImageMaskDataset
from radlens.errors import ConfigError, InputError
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.splits import SplitConfig

OFF = dict(remap_prob=0.0, smooth_prob=0.0, bias_prob=0.0, gamma_prob=0.0, invert_prob=0.0, histogram_prob=0.0,
           noise_prob=0.0)


def _item() -> tuple[torch.Tensor, torch.Tensor]:
    """A T1-like image: background 0.05, CSF 0.2, GM 0.5, WM 0.8 bands, a little texture."""
    mask = torch.zeros(1, 24, 24, dtype=torch.int64)
    mask[:, 4:20, 4:8], mask[:, 4:20, 8:14], mask[:, 4:20, 14:20] = 1, 2, 3
    levels = torch.tensor([0.05, 0.2, 0.5, 0.8])
    image = levels[mask] + 0.01 * torch.randn(1, 24, 24, generator=torch.Generator().manual_seed(0))
    return image.float(), mask


def test_same_seed_same_image_and_the_mask_is_left_alone() -> None:
    image, mask = _item()
    aug = IntensityAugment(IntensityAugmentConfig(), spatial_dims=2)
    before = mask.clone()
    outs = [aug(image, mask, seed) for seed in range(30)]
    assert torch.equal(outs[3], aug(image, mask, 3)) and torch.equal(mask, before)
    assert len({round(float(o.sum()), 4) for o in outs}) > 20 and all(o.shape == image.shape for o in outs)
    assert torch.equal(IntensityAugment(IntensityAugmentConfig(enabled=False), 2)(image, mask, 1), image)


def test_per_label_remap_reorders_the_tissues_and_keeps_each_texture() -> None:
    image, mask = _item()
    aug = IntensityAugment(IntensityAugmentConfig(**{**OFF, "remap_prob": 1.0}), spatial_dims=2)
    t1_order = 0
    for seed in range(40):
        out = aug(image, mask, seed)
        means = [float(out[mask == k].mean()) for k in range(4)]
        t1_order += means[3] > means[2] > means[1]
        for k in range(4):  # inside a label the new values are an increasing affine map of the old ones
            r = np.corrcoef(image[mask == k].numpy(), out[mask == k].numpy())[0, 1]
            assert r > 0.999
        assert float(out.min()) == pytest.approx(float(image.min()), abs=1e-5)  # mapped back onto the image's range
        assert float(out.max()) == pytest.approx(float(image.max()), abs=1e-5)
    assert 0 < t1_order < 20  # the T1 order is one of many (1 in 6 by chance)


def test_inversion_and_3d_images() -> None:
    image, mask = _item()
    inverted = IntensityAugment(IntensityAugmentConfig(**{**OFF, "invert_prob": 1.0}), 2)(image, mask, 0)
    torch.testing.assert_close(inverted, image.max() + image.min() - image)
    volume, labels = torch.rand(1, 12, 10, 8), torch.randint(0, 3, (1, 12, 10, 8))
    out = IntensityAugment(IntensityAugmentConfig(remap_prob=1.0, smooth_prob=1.0, bias_prob=1.0), 3)(volume, labels, 2)
    assert out.shape == volume.shape and not torch.equal(out, volume)
    with pytest.raises(ConfigError, match="probabilities"):
        IntensityAugmentConfig(gamma_prob=1.5)
    with pytest.raises(ConfigError, match="2D or 3D"):
        IntensityAugment(IntensityAugmentConfig(), 1)


def test_image_mask_dataset_applies_it_to_training_keys_of_the_chosen_series(tmp_path: Path) -> None:
    write_mask_bids(tmp_path / "bids", subjects=3)
    cfg = dataclasses.replace(default_config("bids"), dims=3, split=SplitConfig(ratios=(1.0, 0.0, 0.0)))
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "prepared", cfg)
    aug = IntensityAugment(IntensityAugmentConfig(**{**OFF, "invert_prob": 1.0}), 3)
    train = ImageMaskDataset(ds, "train", series_ids=["sub-01_T1w"], intensity=aug, seed=1)
    assert list(train.table["series_id"]) == ["sub-01_T1w"]
    plain, augmented = train[0], train[(0, 0)]  # an index: as stored; (index, epoch): a training draw
    torch.testing.assert_close(augmented["image"], plain["image"].max() + plain["image"].min() - plain["image"])
    assert torch.equal(augmented["mask"], plain["mask"])
    with pytest.raises(InputError, match="no items with a mask of the chosen series in split 'train'"):
        ImageMaskDataset(ds, "train", series_ids=["nope"])
