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
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset
from radlens.prepare.exporters.mrclip import export_mrclip
from radlens.prepare.intensity import to_uint8
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    tmp = tmp_path_factory.mktemp("mrclip")
    write_bids(tmp / "bids", subjects=6)
    cfg = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(12, 12)))
    return prepare_dataset("bids", tmp / "bids", tmp / "prepared", cfg)


def test_export_layout(prepared: PreparedDataset, tmp_path: Path) -> None:
    assert main(["export", "mrclip", str(prepared.path), str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    tables = {split: pd.read_csv(out / f"{split}.csv") for split in ("train", "validation", "test")}
    assert all(list(t.columns) == ["filepath", "text", "label", "patient_id"] for t in tables.values())
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
    assert row["patient_id"] == source["patient_id"]


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
    # The patient survives the round trip: the export's patient_id column, not the series folder.
    back_patients = back.series.set_index("source_path")["patient_id"]
    for rel, patient in back_patients.items():
        assert patient == rel.split("/")[1]  # images/<patient>/<series>/<row>.png
    assert set(back_patients) == set(train["patient_id"]) and back.series["patient_id"].nunique() < len(back.series)


def test_round_trip_keeps_each_subject_in_one_split(prepared: PreparedDataset, tmp_path: Path) -> None:
    """``export mrclip`` then ``prepare csv`` re-splits by patient: a subject's series never straddle splits."""
    assert main(["export", "mrclip", str(prepared.path), str(tmp_path / "out")]) == 0
    table = pd.concat(pd.read_csv(tmp_path / "out" / f"{s}.csv") for s in ("train", "validation", "test"))
    table.to_csv(tmp_path / "out" / "all.csv", index=False)  # every split in one table, re-split by radlens
    assert main(["prepare", "csv", str(tmp_path / "out" / "all.csv"), str(tmp_path / "back"),
                 "--slicing.slice_shape", "[12, 12]", "--slicing.min_foreground", "0"]) == 0
    back = PreparedDataset(tmp_path / "back")
    splits = back.series.groupby("patient_id")["split"].nunique()
    assert len(splits) == 6 and (splits == 1).all() and back.series["split"].nunique() == 3
    # Each subject has two series (T1w, T2w) in two image folders; per-folder patients would have made 12 "patients".
    folders = back.series["source_path"].str.rsplit("/", n=1).str[0]
    assert (folders.groupby(back.series["patient_id"]).nunique() == 2).all()


def test_export_needs_a_2d_dataset(tmp_path: Path) -> None:
    write_bids(tmp_path / "bids", subjects=1)
    cfg = dataclasses.replace(default_config("bids"), dims=3)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "p3", cfg)
    with pytest.raises(InputError, match="2D dataset"):
        export_mrclip(ds.path, tmp_path / "out")


def test_caption_dropout_on_a_csv_dataset_is_refused(prepared: PreparedDataset, tmp_path: Path) -> None:
    """A csv-prepared dataset has no typed metadata to rebuild its MR-CLIP captions from: refused, saying why."""
    from radlens.data.datasets import ClipDataset

    export_mrclip(prepared.path, tmp_path / "out")
    cfg = dataclasses.replace(default_config("csv"), slicing=SliceConfig(slice_shape=(12, 12), min_foreground=0.0))
    back = prepare_dataset("csv", tmp_path / "out" / "train.csv", tmp_path / "back", cfg)
    with pytest.raises(ConfigError, match=r"caption_dropout: captions cannot be rebuilt from this dataset's metadata: "
                                          r"series 'images_.*' has the text 'A brain MRI, plane .*' but its metadata renders "
                                          r"'A brain MRI, plane unknown, Scanner \(Manufacturer, Model, Field Strength\): \(NONE, NONE, NONE\)"):
        ClipDataset(back, "train", caption_dropout=0.5)
    ClipDataset(back, "train")  # without dropout the stored captions are used as they are
    # The dataset the captions were rendered from rebuilds them exactly, so dropout works there.
    ds = ClipDataset(prepared, "train", caption_dropout=1.0)
    assert ds[(0, 0)]["text"] != ds.texts[0] and "(NONE, NONE, NONE)" in ds[(0, 0)]["text"]


def test_real_length_captions_fit_the_stock_tiny_vit2d(prepared: PreparedDataset) -> None:
    """A clinical MR-CLIP caption, with a vocabulary trained on a few phantom captions, is ~130+ tokens: it must fit."""
    from radlens.io.metadata import AcquisitionMetadata
    from radlens.models.registry import build_model
    from radlens.prepare.captions import make_caption

    meta = AcquisitionMetadata(Manufacturer="Philips Medical Systems", ManufacturersModelName="Ingenia Elition X",
                               MagneticFieldStrength=3.0, SeriesDescription="WIP sT2W_FLAIR_3D_SPIR SENSE 1mm_iso CLEAR",
                               ScanningSequence=("SE", "IR"), SequenceVariant=("SK", "SP", "MP", "OSP"), EchoTime=0.3361,
                               RepetitionTime=4.8, InversionTime=1.65, FlipAngle=90.0)
    caption = make_caption(meta, "sagittal")
    model = build_model("tiny-vit2d", texts=list(prepared.series["text"][:4]))
    tokens = model.tokenize([caption])["input_ids"]
    assert 128 < tokens.shape[1] <= model.text.context_length
