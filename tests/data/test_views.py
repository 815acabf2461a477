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


# --- LeCL: lesion-centred views, HU windows, balanced batches ------------------------------------------------------

PLAIN = ViewConfig(flip_prob=0.0, jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0)  # crops only


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.prepared_lesions import write_lesion_prepared

    # train: 4 patients x 6 slices (odd slices have a label-1 lesion box, slices 3 also a label-2 box); validation: 12
    return write_lesion_prepared(tmp_path_factory.mktemp("lesions"), shape=(24, 28), patients={"train": 4, "validation": 2})


def test_centred_crop_contains_the_centre_and_stays_inside() -> None:
    from radlens.data.views import centred_crop_box

    rng = np.random.RandomState(0)
    for _ in range(500):
        centre = (rng.uniform(0, 40), rng.uniform(0, 50))
        top, left, h, w = centred_crop_box((40, 50), centre, (0.05, 0.6), (0.5, 2.0), rng)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 50 and h >= 1 and w >= 1
        assert top <= centre[0] <= top + h and left <= centre[1] <= left + w
        assert 0.03 <= h * w / 2000 <= 0.65
    # away from the border the crop is centred on the point
    top, left, h, w = centred_crop_box((100, 100), (50.0, 40.0), (0.04, 0.04), (1.0, 1.0), rng)
    assert (h, w) == (20, 20) and (top + h / 2, left + w / 2) == (50.0, 40.0)


def test_lesion_slice_views_are_a_lesion_centred_crop_and_the_whole_slice(lesions: Path) -> None:
    import torch.nn.functional as F

    from radlens.data.views import centred_crop_box, view_seed
    from radlens.io.prepared import parse_boxes

    ds = TwoViewDataset(lesions, "train", PLAIN, seed=3, lesion_views=True, lesion_labels=[1], lesion_scale=(0.1, 0.3))
    assert ds.lesions.tolist() == [0, 1, 0, 1, 0, 1] * 4
    i = 3  # a lesion slice with label-1 and label-2 boxes: only the label-1 box is used
    assert [len(b) for b in ds.boxes[:6]] == [0, 1, 0, 1, 0, 1]
    r0, c0, r1, c1 = parse_boxes(ds.table["boxes"].iat[i])[1]
    item = ds[(i, 5)]
    image = torch.from_numpy(ds.image(i))
    assert torch.allclose(item["view2"], image)  # the whole slice (no flip/jitter/blur/noise in PLAIN)
    rng = np.random.RandomState(view_seed(3, 5, i, 0))
    top, left, h, w = centred_crop_box((24, 28), ((r0 + r1) / 2, (c0 + c1) / 2), (0.1, 0.3), PLAIN.crop_ratio, rng)
    assert top <= (r0 + r1) / 2 <= top + h and left <= (c0 + c1) / 2 <= left + w
    expected = F.interpolate(image[None, :, top : top + h, left : left + w], size=(24, 28), mode="bilinear",
                             align_corners=False)[0]
    assert torch.allclose(item["view1"], expected)
    assert item["view1"].max() > 0.15  # the lesion (+200 HU) is in the crop
    other = ds[(2, 5)]  # no lesion: two random resized crops, as without lesion views
    plain = TwoViewDataset(lesions, "train", PLAIN, seed=3)[(2, 5)]
    assert torch.equal(other["view1"], plain["view1"]) and torch.equal(other["view2"], plain["view2"])
    assert not torch.allclose(other["view1"], torch.from_numpy(ds.image(2)))
    # label 2 as the lesion label: flags and boxes follow it
    by2 = TwoViewDataset(lesions, "train", PLAIN, lesion_views=True, lesion_labels=[2])
    assert by2.lesions.tolist()[:6] == [0, 0, 0, 1, 0, 0] and by2.boxes[3] == [(0, 0, 4, 4)]


def test_windows_as_channels_or_samples(lesions: Path, tmp_path: Path) -> None:
    ds = TwoViewDataset(lesions, "train", PLAIN, windows=[(-1000, 1000), (-160, 240)])
    stored = np.load(lesions / ds.table["array_path"].iat[1])[ds.table["row"].iat[1]]
    image = ds.image(1)
    assert image.shape == (2, 24, 28) and ds.channels == 2 and len(ds) == 24
    hu = stored * 1000.0  # hu/1000 storage
    np.testing.assert_allclose(image[0], (hu + 1000) / 2000, atol=1e-5)
    np.testing.assert_allclose(image[1], np.clip((hu + 160) / 400, 0, 1), atol=1e-5)
    assert ds[(1, 0)]["view1"].shape == (2, 24, 28)
    samples = TwoViewDataset(lesions, "train", PLAIN, windows=[(-1000, 1000), (-160, 240)], window_mode="samples")
    assert len(samples) == 48 and samples.channels == 1 and samples.lesions.tolist()[:4] == [0, 0, 1, 1]
    np.testing.assert_array_equal(samples.image(3), image[1:2])  # item 3 = slice 1 in window 1
    assert samples.series_ids[3] == ds.series_ids[1] and samples[(3, 0)]["view1"].shape == (1, 24, 28)
    with pytest.raises(ConfigError, match=r"window \[-1200, 400\] HU reaches outside the stored range \[-1000, 1000\]"):
        TwoViewDataset(lesions, "train", windows=[(-1200, 400)])
    with pytest.raises(ConfigError, match="low < high"):
        TwoViewDataset(lesions, "train", windows=[(400, -400)])
    mr = write_prepared(tmp_path / "mr", shape=(8, 8), patients={"train": 1})
    with pytest.raises(ConfigError, match="HU windows need a CT dataset"):
        TwoViewDataset(mr, "train", windows=[(0, 80)])


def test_window_coefficients_invert_every_ct_output() -> None:
    from radlens.data.windows import apply_windows, window_coefficients
    from radlens.prepare.intensity import ct_window

    hu = np.linspace(-1200, 1300, 101)
    for output in ("0,1", "-1,1", "hu/1000"):
        card = {"modality": "CT", "config": {"intensity": {"ct_window": [-1000, 1200], "ct_output": output}}}
        stored = ct_window(hu, -1000, 1200, output)
        got = apply_windows(stored, window_coefficients(card, [(-1000, 1200), (-160, 240)]))
        np.testing.assert_allclose(got[0], (np.clip(hu, -1000, 1200) + 1000) / 2200, atol=1e-5)
        np.testing.assert_allclose(got[1], np.clip((hu + 160) / 400, 0, 1), atol=1e-5)


def test_a_box_outside_the_slice_is_refused(lesions: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    bad = tmp_path / "bad"
    shutil.copytree(lesions, bad)
    table = pd.read_parquet(bad / "slices.parquet")
    table.loc[1, "boxes"] = '{"1": [20, 20, 30, 26]}'
    table.to_parquet(bad / "slices.parquet", index=False)
    with pytest.raises(InputError, match=r"slices.parquet: slice 'ct-001:1': lesion box \[20, 20, 30, 26\] .* 24x28 slice"):
        TwoViewDataset(bad, "train", lesion_views=True)


def test_balanced_batches_are_half_lesion_deterministic_and_resumable() -> None:
    strata = np.array([1] * 5 + [0] * 35)
    sampler = ClipBatchSampler(40, 4, seed=1, strata=strata, world_size=2, rank=0)
    batches = sampler.global_batches(0)
    assert len(batches) == 5
    for batch in batches:
        assert strata[batch].sum() == 4 and len(set(batch.tolist())) == 8  # half lesion, no item twice
    assert all(np.array_equal(a, b) for a, b in zip(batches, ClipBatchSampler(40, 4, seed=1, strata=strata,
                                                                               world_size=2).global_batches(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, sampler.global_batches(1)))
    rank1 = ClipBatchSampler(40, 4, seed=1, strata=strata, world_size=2, rank=1)
    assert [k for k, _ in next(iter(rank1))] == batches[0][4:].tolist()
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume(2, 3)
    assert list(sampler) == full[3:]
    # a stratum too small for its share gives all it has and the other fills up
    few = ClipBatchSampler(12, 6, seed=0, strata=np.array([1, 1] + [0] * 10))
    assert all(np.array([1, 1] + [0] * 10)[b].sum() == 2 for b in few.global_batches(0))
    one = ClipBatchSampler(12, 6, seed=0, strata=np.zeros(12))  # one stratum: the plain shuffle
    assert all(np.array_equal(a, b) for a, b in zip(one.global_batches(0), ClipBatchSampler(12, 6, seed=0).global_batches(0)))
    with pytest.raises(ConfigError, match="not both"):
        ClipBatchSampler(12, 6, groups=np.arange(12), strata=np.zeros(12))


def test_views_data_module_for_lecl(lesions: Path) -> None:
    from radlens.data.views import MocoDataConfig

    cfg = MocoDataConfig(batch_size=6, sampler="balanced", lesion_views=True, windows=[(-160, 240)],
                         view=PLAIN, view2=PLAIN)
    dm = ImageViewsDataModule.from_config(lesions, cfg, seed=2)
    dm.trainer = stand_in_trainer()
    assert dm.channels == 1 and dm.strata() is not None
    assert dm.preprocessing()["windows"] == [[-160.0, 240.0]] and dm.preprocessing()["window_mode"] == "channels"
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(int(b["lesion"].sum()) == 3 for b in batches)
    assert batches[0]["patient_id"][0].startswith("pt-")
    val = list(dm.val_dataloader())  # val_augment: training-like views with epoch 0's seeds, the same every time
    assert [len(b["index"]) for b in val] == [6, 6] and not torch.equal(val[0]["view1"], val[0]["view2"])
    assert torch.equal(next(iter(dm.val_dataloader()))["view1"], val[0]["view1"])
    assert torch.equal(val[0]["view1"][0], dm.val_set[(0, 0)]["view1"])
    with pytest.raises(ConfigError, match="lesion_scale"):
        MocoDataConfig(lesion_scale=(0.5, 0.2))
