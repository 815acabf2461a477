"""Image + label-map items: shapes and dtypes, presence/boxes, augmentation of both together, collation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from support.mask_layouts import LABELS, write_mask_bids
from support.stand_in import stand_in_trainer

from radlens.data.augment import AugmentConfig
from radlens.data.masks import ImageMaskDataset
from radlens.errors import InputError
from radlens.io.prepared import PreparedDataset
from radlens.prepare.masks import label_boxes
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig
from radlens.prepare.spatial import SpatialConfig
from radlens.prepare.splits import SplitConfig

SPLIT = SplitConfig(ratios=(1.0, 0.0, 0.0))  # everything in train
K = max(LABELS) + 1


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[int, PreparedDataset]:
    tmp = tmp_path_factory.mktemp("masks")
    pairs = write_mask_bids(tmp / "bids", subjects=3)
    pairs[2][1].unlink()  # sub-02: no mask
    base = dataclasses.replace(default_config("bids"), split=SPLIT)
    cfg2 = dataclasses.replace(base, slicing=SliceConfig(slice_shape=(24, 24)))
    cfg3 = dataclasses.replace(base, dims=3, spatial=SpatialConfig(shape=(20, 16, 10)))
    return {dims: prepare_dataset("bids", tmp / "bids", tmp / f"d{dims}", cfg) for dims, cfg in ((2, cfg2), (3, cfg3))}


@pytest.mark.parametrize("dims", [2, 3])
def test_items_group_image_mask_presence_and_boxes(prepared: dict[int, PreparedDataset], dims: int) -> None:
    ds = ImageMaskDataset(prepared[dims], "train")
    spatial = (24, 24) if dims == 2 else (20, 16, 10)
    table = prepared[dims].slices if dims == 2 else prepared[dims].series
    assert len(ds) == int((table["mask_path"] != "").sum()) and ds.num_labels == K
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == item["mask"].shape == (1, *spatial) and item["index"] == i
        assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.int64
        assert set(item["mask"].unique().tolist()) <= set(LABELS)
        boxes = label_boxes(item["mask"][0].numpy())
        assert item["labels_present"].shape == (K,) and item["boxes"].shape == (K, 2 * dims)
        assert np.flatnonzero(item["labels_present"].numpy()).tolist() == sorted(boxes)
        for label, box in boxes.items():
            assert item["boxes"][label].tolist() == box
        assert (item["boxes"][~item["labels_present"]] == -1).all()
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["mask"].shape == (2, 1, *spatial) and batch["boxes"].shape == (2, K, 2 * dims)
    # Items without a mask are left out, or kept with a mask of -1 (unknown).
    every = ImageMaskDataset(prepared[dims], "train", masked_only=False)
    assert len(every) == len(table)
    unknown = [every[i] for i in range(len(every)) if every.table["mask_path"].iat[i] == ""]
    assert unknown and all((u["mask"] == -1).all() and not u["labels_present"].any() for u in unknown)
    with pytest.raises(InputError, match="no items with a mask in split 'test'"):
        ImageMaskDataset(prepared[dims], "test")


@pytest.mark.parametrize("dims", [2, 3])
def test_augmentation_moves_image_and_mask_together(prepared: dict[int, PreparedDataset], dims: int) -> None:
    strong = AugmentConfig(flip_prob=0.5, affine_prob=1.0, rotate_degrees=20.0, scale=0.1, translate_fraction=0.1,
                           intensity_prob=0.0, noise_prob=0.0)
    ds = ImageMaskDataset(prepared[dims], "train", augment=strong, seed=3)
    plain = ImageMaskDataset(prepared[dims], "train")
    index = int(np.flatnonzero([plain[i]["labels_present"][1] for i in range(len(plain))])[0])
    first, again, other = ds[(index, 0)], ds[(index, 0)], ds[(index, 1)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["mask"], other["mask"])  # another epoch, another draw
    assert torch.equal(ds[index]["mask"], plain[index]["mask"])  # a plain index is not augmented
    for item in (first, other):
        mask, image = item["mask"][0], item["image"][0]
        assert set(mask.unique().tolist()) <= set(LABELS)  # nearest: labels stay labels
        assert not torch.equal(mask, plain[index]["mask"][0])
        # The bright cube (label 1) moved with the mask: its voxels stay bright, most bright voxels are label 1.
        mid = float(plain[index]["image"].max()) / 2
        assert (image[mask == 1] > mid).float().mean() > 0.9
        assert (mask[image > mid] == 1).float().mean() > 0.9
        boxes = label_boxes(mask.numpy())
        assert np.flatnonzero(item["labels_present"].numpy()).tolist() == sorted(boxes)
        assert all(item["boxes"][k].tolist() == v for k, v in boxes.items())


@pytest.mark.parametrize("dims", [2, 3])
def test_data_module_batches_image_and_mask_together(prepared: dict[int, PreparedDataset], dims: int) -> None:
    from radlens.data.modules import ImageMaskDataModule

    dm = ImageMaskDataModule(prepared[dims], batch_size=2, augment=AugmentConfig(), seed=0)
    dm.trainer = stand_in_trainer()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[:2] == (2, 1) and batch["mask"].shape == batch["image"].shape
    assert batch["mask"].dtype == torch.int64 and set(batch["mask"].unique().tolist()) <= {0, *LABELS}
    assert dm.val_dataloader() == [] and dm.preprocessing()["labels"] == prepared[dims].card["labels"]
