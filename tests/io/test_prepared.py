"""Reading a prepared dataset: tables, memory-mapped arrays, fast slice access, splits, bad folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.layouts import write_bids  # noqa: E402

from radlens.errors import InputError  # noqa: E402
from radlens.io.prepared import PreparedDataset  # noqa: E402
from radlens.prepare.pipeline import default_config, prepare_dataset  # noqa: E402
from radlens.prepare.slicing import SliceConfig  # noqa: E402


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("prepared")
    write_bids(tmp / "bids", subjects=3)
    cfg = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(12, 12)))
    prepare_dataset("bids", tmp / "bids", tmp / "out", cfg)
    return tmp / "out"


def test_reader(prepared: Path) -> None:
    ds = PreparedDataset(prepared)
    assert ds.dims == 2 and len(ds.series) == 6 and len(ds.slices) == ds.card["counts"]["slices"]
    row = ds.slices.iloc[5]
    by_id, by_row = ds.slice(row["slice_id"]), ds.slice(5)
    full = ds.array(row["series_id"])
    assert isinstance(full, np.memmap) and not full.flags.writeable
    np.testing.assert_array_equal(by_id, full[row["row"]])
    np.testing.assert_array_equal(by_row, by_id)
    assert ds.array(row["series_id"]) is full  # memmaps are cached
    train = ds.split("train")
    assert set(train["split"]) == {"train"} and len(train) + len(ds.split("validation")) + len(ds.split("test")) == len(ds.slices)
    assert ds.value_range == (0.0, 1.0) and ds.failures.empty
    with pytest.raises(ValueError, match="unknown split"):
        ds.split("holdout")
    with pytest.raises(KeyError):
        ds.array("nope")


def test_not_a_prepared_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a prepared dataset"):
        PreparedDataset(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        PreparedDataset(tmp_path / "missing")


def test_masks_and_labels(tmp_path: Path) -> None:
    from support.mask_layouts import LABELS, write_mask_bids

    from radlens.io.prepared import parse_boxes

    pairs = write_mask_bids(tmp_path / "bids", subjects=2)
    pairs[1][1].unlink()  # sub-01 has no mask
    cfg = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(16, 16)))
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "out", cfg)
    assert ds.labels == LABELS
    full = ds.mask("sub-00_T1w")
    assert isinstance(full, np.memmap) and not full.flags.writeable and full.shape == ds.array("sub-00_T1w").shape
    assert ds.mask("sub-00_T1w") is full and ds.mask("sub-01_T1w") is None
    slices = ds.slices.reset_index(drop=True)
    for i, row in slices.iterrows():
        mask = ds.slice_mask(row["slice_id"])
        if row["series_id"] == "sub-01_T1w":
            assert mask is None and ds.slice_mask(i) is None and row["lesion"] == -1 and row["labels_present"] is None
            assert pd.isna(row["boxes"]) and parse_boxes(row["boxes"]) == {}
        else:
            np.testing.assert_array_equal(mask, full[row["row"]])
            np.testing.assert_array_equal(ds.slice_mask(i), mask)
            assert parse_boxes(row["boxes"]).keys() == set(row["labels_present"])
    with pytest.raises(KeyError):
        ds.mask("nope")
    # A dataset prepared without masks has an empty label table.
    assert PreparedDataset(tmp_path / "out").labels == LABELS
