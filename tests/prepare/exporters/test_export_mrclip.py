"""MR-CLIP export: PNG slices + filepath,text,label CSVs + bin intervals; round trip through the CSV importer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.layouts import write_bids

from radlens.cli import main
from radlens.errors import InputError
from radlens.io.prepared import PreparedDataset
from radlens.prepare.exporters.mrclip import export_mrclip
from radlens.prepare.intensity import to_uint8
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    tmp = tmp_path_factory.mktemp("mrclip")
    write_bids(tmp / "bids", subjects=3)
    cfg = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(12, 12)))
    return prepare_dataset("bids", tmp / "bids", tmp / "prepared", cfg)


def test_export_layout(prepared: PreparedDataset, tmp_path: Path) -> None:
    assert main(["export", "mrclip", str(prepared.path), str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    tables = {split: pd.read_csv(out / f"{split}.csv") for split in ("train", "validation", "test")}
    assert all(list(t.columns) == ["filepath", "text", "label"] for t in tables.values())
    assert sum(len(t) for t in tables.values()) == len(prepared.slices)
    intervals = json.loads((out / "bin_intervals_et_20_rt_20.json").read_text())
    assert set(intervals) == {"Echo Time", "Repetition Time", "Inversion Time"} and len(intervals["Echo Time"]) == 20
    row = tables["train"].iloc[0]
    png = np.asarray(Image.open(out / row["filepath"]))
    assert png.dtype == np.uint8 and png.shape == (12, 12)
    _, patient, series_id, name = row["filepath"].split("/")
    stored = prepared.array(series_id)[int(name[:4])]
    np.testing.assert_array_equal(png, to_uint8(stored))
    source = prepared.series.set_index("series_id").loc[series_id]
    assert (patient, row["text"], row["label"]) == (source["patient_id"], source["text"], source["label"])


def test_round_trip_through_the_csv_importer(prepared: PreparedDataset, tmp_path: Path) -> None:
    export_mrclip(prepared.path, tmp_path / "out")
    cfg = dataclasses.replace(default_config("csv"), slicing=SliceConfig(slice_shape=(12, 12), min_foreground=0.0))
    back = prepare_dataset("csv", tmp_path / "out" / "train.csv", tmp_path / "back", cfg)
    train = prepared.split("train")
    assert len(back.slices) == len(train) and back.card["counts"]["failures"] == 0
    # Same texts and labels, and pixels equal up to the 8-bit quantisation.
    assert sorted(back.slices["text"]) == sorted(train["text"])
    assert sorted(back.slices["label"]) == sorted(train["label"])
    for i in range(len(train)):
        orig = prepared.slice(train["slice_id"].iat[i])
        rel = f"images/{train['patient_id'].iat[i]}/{train['series_id'].iat[i]}/{int(train['row'].iat[i]):04d}"
        again = back.slice(back.slices.index[back.slices["series_id"] == rel.replace("/", "_")][0])
        np.testing.assert_allclose(again, orig, atol=0.5 / 255 + 1e-6)
    # Slices of one series stay one patient (the image folder).
    assert back.series["patient_id"].nunique() == train["series_id"].nunique()


def test_export_needs_a_2d_dataset(tmp_path: Path) -> None:
    write_bids(tmp_path / "bids", subjects=1)
    cfg = dataclasses.replace(default_config("bids"), dims=3)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "p3", cfg)
    with pytest.raises(InputError, match="2D dataset"):
        export_mrclip(ds.path, tmp_path / "out")
