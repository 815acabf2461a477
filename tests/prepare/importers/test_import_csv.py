"""CSV import: required columns checked before any work, 2D images and volumes, findings, patients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.layouts import write_bids

from radlens.errors import InputError
from radlens.prepare import pipeline
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig


def cfg2d():  # type: ignore[no-untyped-def]
    return dataclasses.replace(default_config("csv"), slicing=SliceConfig(slice_shape=(8, 8), min_foreground=0.0))


def test_missing_columns_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "data.csv"
    pd.DataFrame({"image": ["a.png"], "caption": ["x"]}).to_csv(table, index=False)
    monkeypatch.setattr(pipeline, "prepare_series", lambda *a: pytest.fail("work started"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['text'\]"):
        prepare_dataset("csv", table, tmp_path / "out", cfg2d())


def test_png_rows_with_findings_and_patients(tmp_path: Path) -> None:
    rows = []
    for i in range(6):
        path = tmp_path / "img" / f"p{i % 3}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 40 * i + 10, np.uint8)).save(path)
        rows.append({"filepath": f"img/p{i % 3}/{i}.png", "text": f"image {i}", "label": i % 2, "nodule": i % 2,
                     "patient_id": f"p{i % 3}", "split": ["train", "train", "test"][i % 3]})
    rows.append({"filepath": "img/missing.png", "text": "gone", "label": 0, "nodule": 0, "patient_id": "p9", "split": "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    ds = prepare_dataset("csv", tmp_path / "data.csv", tmp_path / "out", cfg2d())
    assert ds.failures[["path", "reason"]].values.tolist() == [["img/missing.png", "no such file"]]
    assert ds.card["findings"] == ["nodule"] and len(ds.slices) == 6
    s = ds.series.set_index("series_id")
    assert s.loc["img_p1_4", "split"] == "train" and s.loc["img_p2_5", "split"] == "test"  # kept from the CSV
    assert s.loc["img_p1_4", "label"] == 0 and s.loc["img_p1_4", "nodule"] == 0 and s.loc["img_p1_1", "nodule"] == 1
    assert np.allclose(ds.slice("img_p1_4:0"), 170 / 255)


def test_volume_rows(tmp_path: Path) -> None:
    paths = write_bids(tmp_path / "bids", subjects=1)
    pd.DataFrame({"path": [str(p) for p in paths], "text": ["a", "b"]}).to_csv(tmp_path / "vols.csv", index=False)
    cfg = dataclasses.replace(default_config("csv"), dims=3)
    ds = prepare_dataset("csv", tmp_path / "vols.csv", tmp_path / "out", cfg)
    assert list(ds.series["text"]) == ["a", "b"] and ds.array(ds.series["series_id"].iat[0]).shape == (1, 12, 12, 4)
    assert ds.card["modality"] == "MR"  # from the sidecar next to the volume
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(flat)
    pd.DataFrame({"path": [str(flat)], "text": ["2d"]}).to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(InputError, match="nothing usable"):
        prepare_dataset("csv", tmp_path / "flat.csv", tmp_path / "out2", cfg)
    assert "3D volume is needed" in pd.read_csv(tmp_path / "out2" / "failures.csv")["reason"].iat[0]
