"""Two augmented views of a 2D slice: shapes, seeding per (seed, epoch, index, view), the DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.prepared_clip import write_prepared
from support.stand_in import stand_in_trainer

from radlens.data.modules import ImageViewsDataModule
from radlens.data.samplers import ClipBatchSampler
from radlens.data.views import TwoViewDataset, ViewConfig, collate_views, crop_box
from radlens.errors import ConfigError, InputError

SHAPE = (16, 20)
STRONG = ViewConfig(crop_scale=(0.2, 0.6), flip_prob=0.5, jitter_prob=1.0, blur_prob=0.5, noise_prob=1.0)


@pytest.fixture(scope="module")
def prep2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # train: 2 patients x 2 protocols x 4 slices = 16 slices; validation: 8.
    return write_prepared(tmp_path_factory.mktemp("views"), shape=SHAPE, patients={"train": 2, "validation": 1})


def test_views_are_augmented_slices_of_the_slice_shape(prep2d: Path) -> None:
    ds = TwoViewDataset(prep2d, "train", STRONG, seed=1)
    assert len(ds) == 16
    item = ds[(5, 0)]
    assert item["view1"].shape == item["view2"].shape == (1, *SHAPE)
    assert item["view1"].dtype == torch.float32 and type(item["view1"]) is torch.Tensor
    assert not torch.equal(item["view1"], item["view2"])
    row = ds.table.iloc[5]
    assert item["index"] == 5 and item["series_id"] == row["series_id"] and item["patient_id"] == row["patient_id"]
    assert item["lesion"] == -1
    stored = np.load(prep2d / row["array_path"])[row["row"]]
    evaluation = ds[5]  # a plain index: the stored slice, unaugmented, twice
    np.testing.assert_array_equal(evaluation["view1"].numpy()[0], stored)
    assert torch.equal(evaluation["view1"], evaluation["view2"])


def test_views_depend_only_on_seed_epoch_index(prep2d: Path) -> None:
    a, b = TwoViewDataset(prep2d, "train", STRONG, seed=1), TwoViewDataset(prep2d, "train", STRONG, seed=1)
    first = a[(3, 2)]
    b[(7, 0)]  # another item drawn first changes nothing
    again = b[(3, 2)]
    assert torch.equal(first["view1"], again["view1"]) and torch.equal(first["view2"], again["view2"])
    assert not torch.equal(first["view1"], a[(3, 1)]["view1"])  # a new epoch, new views
    assert not torch.equal(first["view1"], TwoViewDataset(prep2d, "train", STRONG, seed=2)[(3, 2)]["view1"])


def test_crop_box_follows_the_area_and_ratio_ranges() -> None:
    rng = np.random.RandomState(0)
    for _ in range(200):
        top, left, h, w = crop_box((64, 80), (0.2, 0.5), (0.75, 4 / 3), rng)
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 80
        assert 0.18 <= h * w / (64 * 80) <= 0.52 and 0.7 <= w / h <= 1.4
    assert crop_box((10, 10), (1.0, 1.0), (1.0, 1.0), rng) == (0, 0, 10, 10)


def test_refuses_3d_and_bad_configs(tmp_path: Path, prep2d: Path) -> None:
    prep3d = write_prepared(tmp_path / "p3", dims=3, shape=(8, 8, 4), patients={"train": 1})
    with pytest.raises(InputError, match="radlens prepare --dims 2"):
        TwoViewDataset(prep3d, "train", ViewConfig())
    with pytest.raises(InputError, match="no slices in split 'test'"):
        TwoViewDataset(prep2d, "test", ViewConfig())
    with pytest.raises(ConfigError, match="crop_scale"):
        ViewConfig(crop_scale=(0.5, 1.5))
    with pytest.raises(ConfigError, match="blur_prob"):
        ViewConfig(blur_prob=2.0)


def test_data_module_loaders(prep2d: Path) -> None:
    dm = ImageViewsDataModule(prep2d, STRONG, batch_size=6, eval_batch_size=5, seed=4)
    dm.trainer = stand_in_trainer()
    assert dm.preprocessing()["dims"] == 2 and dm.preprocessing()["array_shape"] == list(SHAPE)
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 2  # 16 slices in batches of 6: the incomplete last batch is dropped
    batch = batches[0]
    assert batch["view1"].shape == batch["view2"].shape == (6, 1, *SHAPE) and batch["index"].shape == (6,)
    assert batch["lesion"].tolist() == [-1] * 6 and len(batch["series_id"]) == 6
    # The batch is what the dataset gives for those (index, epoch) keys, whoever builds it.
    fresh = TwoViewDataset(prep2d, "train", STRONG, seed=4)
    expected = collate_views([fresh[(int(i), 1)] for i in batch["index"]])
    assert torch.equal(batch["view1"], expected["view1"]) and torch.equal(batch["view2"], expected["view2"])
    val = list(dm.val_dataloader())
    assert [len(b["index"]) for b in val] == [5, 3] and torch.equal(val[0]["view1"], val[0]["view2"])
    # Resuming mid-epoch gives the remaining batch exactly.
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 1, "batches": 1})
    assert torch.equal(next(iter(resumed))["view1"], batches[1]["view1"])
    with pytest.raises(ConfigError, match="cannot fill one batch"):
        big = ImageViewsDataModule(prep2d, STRONG, batch_size=17)
        big.trainer = stand_in_trainer()
        big.train_dataloader()
    with pytest.raises(ConfigError, match="sampler"):
        ImageViewsDataModule(prep2d, STRONG, batch_size=2, sampler="distinct_label")


def test_sampler_groups_are_series(prep2d: Path) -> None:
    dm = ImageViewsDataModule(prep2d, None, batch_size=4, sampler="distinct_series")
    groups = dm.groups()
    assert groups is not None and len(np.unique(groups)) == 4
    for batch in ClipBatchSampler(len(dm.train_set), 4, seed=0, groups=groups).global_batches(0):
        assert len(set(groups[batch])) == 4
