"""Bags of slice embeddings from real HDF5 files: items, padding + mask, bad files, subsampling, the DataModule."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from support.stand_in import stand_in_trainer

from radlens.data.bags import BagDataset, collate_bags
from radlens.data.modules import BagDataModule
from radlens.errors import ConfigError, InputError
from radlens.models.mil import ABMIL

D = 8
SIZES = (3, 7, 5, 12, 4, 9)


def write_bag(path: Path, n: int, dim: int = D, seed: int = 0, slice_offset: int = 10) -> Path:
    """A feature file as ``radlens extract bags`` writes it (FORMATS.md)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=rng.normal(size=(n, dim)).astype(np.float32))
        f.create_dataset("slice_index", data=np.arange(slice_offset, slice_offset + n))
        f.create_dataset("z_mm", data=np.arange(n) * 2.5)
        f.attrs["encoder"] = "tiny-vit2d"
        f.attrs["encoder_hash"] = "abc123"
        f.attrs["radlens_version"] = "0.1.0"
    return path


@pytest.fixture
def bags(tmp_path: Path) -> pd.DataFrame:
    rows = []
    for i, n in enumerate(SIZES):
        write_bag(tmp_path / "feats" / f"s{i}.h5", n, seed=i)
        rows.append({"path": f"feats/s{i}.h5", "patient_id": f"p{i}", "split": "train" if i < 4 else "validation",
                     "effusion": i % 2, "nodule": int(i < 3), "stage": i % 3})
    return pd.DataFrame(rows)


def test_items_are_the_stored_bags(bags: pd.DataFrame, tmp_path: Path) -> None:
    ds = BagDataset(bags, target_columns=["effusion", "nodule"], root=tmp_path)
    assert len(ds) == len(SIZES) and ds.dim == D and list(ds.sizes) == list(SIZES)
    assert ds.target_kind == "binary" and ds.attrs["encoder_hash"] == "abc123"
    item = ds[1]
    with h5py.File(tmp_path / "feats/s1.h5") as f:
        np.testing.assert_array_equal(item["feats"].numpy(), f["feats"][()])
    assert item["feats"].dtype == torch.float32 and item["index"] == 1
    assert item["targets"].tolist() == [1.0, 1.0] and item["targets"].dtype == torch.float32
    assert item["slice_index"].tolist() == list(range(10, 17))
    classes = BagDataset(bags, target_columns=["stage"], root=tmp_path, split="train")
    assert len(classes) == 4 and classes.target_kind == "class"
    assert classes[2]["targets"].dtype == torch.long and classes[2]["targets"].ndim == 0 and int(classes[2]["targets"]) == 2


def test_padding_with_mask_gives_each_bags_own_logits(bags: pd.DataFrame, tmp_path: Path) -> None:
    ds = BagDataset(bags, target_columns=["effusion"], root=tmp_path)
    items = [ds[i] for i in range(len(ds))]
    batch = collate_bags(items)
    assert batch["feats"].shape == (len(SIZES), max(SIZES), D) and batch["mask"].dtype == torch.bool
    assert batch["mask"].sum(1).tolist() == list(SIZES) and batch["targets"].shape == (len(SIZES), 1)
    assert (batch["feats"][~batch["mask"]] == 0).all() and (batch["slice_index"][~batch["mask"]] == -1).all()
    torch.manual_seed(0)
    head = ABMIL(D, hidden=16, n_classes=3).eval()
    ones = [torch.ones(1, len(it["feats"]), dtype=torch.bool) for it in items]
    with torch.no_grad():
        weights = head.attention(batch["feats"], batch["mask"])
        assert (weights[~batch["mask"]] == 0).all()
        for b, (it, mask) in enumerate(zip(items, ones)):  # bit for bit: padding never enters the attention
            assert torch.equal(weights[b, : len(it["feats"])], head.attention(it["feats"][None], mask)[0])
        padded = head(batch["feats"], batch["mask"])
        alone = torch.cat([head(it["feats"][None], mask) for it, mask in zip(items, ones)])
    # The pooled sum over N_max vs n terms (the extra ones exactly 0) may round differently in the last bit.
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("break_file", "message"),
    [
        (lambda p: None, "feature file not found"),
        (lambda p: p.write_bytes(b"not hdf5 at all"), "not a readable HDF5 feature file"),
        (lambda p: h5py.File(p, "w").close(), "no 'feats' dataset"),
        (lambda p: h5py.File(p, "w").create_dataset("feats", data=np.zeros((2, 3, D), np.float32)), "must be 2-D"),
        (lambda p: write_bag(p, 4, dim=D + 1), "D=9 differs from D=8"),
        (lambda p: h5py.File(p, "w").create_dataset("feats", data=np.zeros((0, D), np.float32)), "empty bag"),
    ],
    ids=["missing", "not-hdf5", "no-feats", "3d-feats", "other-dim", "empty"],
)
def test_bad_files_are_named(bags: pd.DataFrame, tmp_path: Path, break_file, message: str) -> None:
    bad = tmp_path / "feats" / "s2.h5"
    bad.unlink()
    result = break_file(bad)
    if isinstance(result, h5py.Dataset):
        result.file.close()
    with pytest.raises(InputError, match=message) as err:
        BagDataset(bags, root=tmp_path)
    assert err.value.path == str(bad)


def test_bad_tables(bags: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no target column"):
        BagDataset(bags, target_columns=["fracture"], root=tmp_path)
    with pytest.raises(InputError, match="no feature column 'h5'"):
        BagDataset(bags, feature_column="h5", root=tmp_path)
    with pytest.raises(InputError, match="no bags in split 'test'"):
        BagDataset(bags, root=tmp_path, split="test")
    with pytest.raises(InputError, match="'effusion' is missing in row 0"):
        BagDataset(bags.assign(effusion=[np.nan, 1, 0, 1, 0, 1]), target_columns=["effusion"], root=tmp_path)
    with pytest.raises(InputError, match="one column of class ids"):
        BagDataset(bags, target_columns=["stage", "nodule"], root=tmp_path)
    with pytest.raises(ConfigError, match="max_instances"):
        BagDataset(bags, root=tmp_path, max_instances=0)


def test_subsampling_is_seeded_per_epoch_and_even_in_evaluation(bags: pd.DataFrame, tmp_path: Path) -> None:
    ds = BagDataset(bags, root=tmp_path, max_instances=4, seed=3)
    again = BagDataset(bags, root=tmp_path, max_instances=4, seed=3)
    with h5py.File(tmp_path / "feats/s3.h5") as f:  # 12 instances
        stored = f["feats"][()]
    train = ds[(3, 1)]
    assert train["feats"].shape == (4, D)
    torch.testing.assert_close(train["feats"], again[(3, 1)]["feats"], rtol=0, atol=0)
    rows = train["slice_index"].numpy() - 10
    assert (np.diff(rows) > 0).all()  # file order kept
    np.testing.assert_array_equal(train["feats"].numpy(), stored[rows])
    epochs = {tuple(ds[(3, e)]["slice_index"].tolist()) for e in range(6)}
    assert len(epochs) > 1  # a new subset every epoch
    assert ds[3]["slice_index"].tolist() == [11, 14, 17, 20]  # evaluation: evenly spaced, centred
    assert ds[(0, 1)]["feats"].shape == (3, D)  # a bag within the cap is whole
    assert BagDataset(bags, root=tmp_path, max_instances=1)[3]["slice_index"].tolist() == [16]


def test_data_module_loaders(bags: pd.DataFrame, tmp_path: Path) -> None:
    train, val = bags[bags["split"] == "train"], bags[bags["split"] == "validation"]
    dm = BagDataModule(train, val, ["effusion", "nodule"], batch_size=3, eval_batch_size=2, root=tmp_path, max_instances=6)
    dm.trainer = stand_in_trainer()
    assert dm.feature_dim == D and dm.preprocessing()["features"]["attrs"]["encoder"] == "tiny-vit2d"
    batches = list(dm.train_dataloader())
    assert len(batches) == 1  # 4 bags, batches of 3: the incomplete last batch is dropped
    batch = batches[0]
    assert batch["feats"].shape[0] == 3 and batch["feats"].shape[1] <= 6 and batch["targets"].shape == (3, 2)
    assert batch["mask"].sum(1).tolist() == [min(SIZES[i], 6) for i in batch["index"].tolist()]
    val_batches = list(dm.val_dataloader())
    assert [b["index"].tolist() for b in val_batches] == [[0, 1]]
    assert val_batches[0]["mask"].sum(1).tolist() == [4, 6]
    with pytest.raises(ConfigError, match="cannot fill one batch"):
        dm5 = BagDataModule(train, None, ["effusion"], batch_size=5, root=tmp_path)
        dm5.trainer = stand_in_trainer()
        dm5.train_dataloader()
    write_bag(tmp_path / "wide.h5", 3, dim=D * 2)
    with pytest.raises(InputError, match="validation features have D=16"):
        BagDataModule(train, pd.DataFrame({"path": ["wide.h5"], "effusion": [0], "nodule": [1]}), ["effusion", "nodule"],
                      batch_size=2, root=tmp_path)
