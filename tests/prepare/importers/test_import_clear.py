"""CLEAR's lesion table: one-slice series whose slice-level lesion flag comes from the CSV, without masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.lesion_layouts import write_clear
from support.mask_layouts import save

from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset
from radlens.prepare import pipeline
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.splits import SplitConfig


def cfg(**changes: object) -> pipeline.PrepareConfig:
    preset = default_config("clear")
    return dataclasses.replace(preset, slicing=dataclasses.replace(preset.slicing, slice_shape=(20, 24)), **changes)


def test_clear_flags_reach_slices(tmp_path: Path) -> None:
    table = write_clear(tmp_path / "clear")
    ds = prepare_dataset("clear", table.parent, tmp_path / "out", cfg(split=SplitConfig(ratios=(0.5, 0.25, 0.25))))
    # The missing image is a failure naming the row; the others are one-slice series.
    assert ds.failures["path"].tolist() == ["patient_009_slice_000.png"]
    assert ds.failures["reason"].iat[0].startswith("line 14: no such file (looked for patient_009_slice_000.png, ")
    assert len(ds.series) == 12 and (ds.series["n_slices"] == 1).all() and ds.dims == 2
    # Every lesion_present reached slices.parquet's lesion column; no masks, so no boxes.
    expected = pd.read_csv(table).iloc[:12]
    ids = [f"{p}_slice_{s:03d}" for p in expected["patient_id"].unique() for s in range(3)]
    slices = PreparedDataset(tmp_path / "out").slices
    assert slices is not None and str(slices["lesion"].dtype) == "int8"
    got = slices.set_index("series_id")["lesion"]
    assert got.loc[ids].tolist() == expected["lesion_present"].tolist()
    assert slices["boxes"].isna().all() and slices["labels_present"].isna().all() and (slices["mask_path"] == "").all()
    assert ds.labels == {} and set(ds.series["text"]) == {""}
    # README names (patient_001_slice_001.png) and plain paths both find patient_001/slice_001.png.
    series = ds.series.set_index("series_id")
    assert series.loc["patient_001_slice_001", "source_path"] == "patient_001/slice_001.png"
    assert series.loc["patient_003_slice_002", "source_path"] == "patient_003/slice_002.png"
    # Patients from the patient_id column, one split each, the pixel values as stored / 255.
    assert series["patient_id"].nunique() == 4 and ds.series.groupby("patient_id")["split"].nunique().eq(1).all()
    assert ds.slice("patient_002_slice_001:0")[10, 12] == pytest.approx((100 + 20 + 2) / 255)


def test_clear_bad_flags_are_errors_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = write_clear(tmp_path / "clear")
    rows = pd.read_csv(table, dtype=str, keep_default_na=False)
    monkeypatch.setattr(pipeline, "prepare_series", lambda *a: pytest.fail("work started"))
    for value in ("2", "yes", "0.5"):
        rows.loc[1, "lesion_present"] = value
        rows.to_csv(table, index=False)
        with pytest.raises(InputError, match=rf"line 3 \(patient_000_slice_001.png\): lesion_present '{value}' is not 0, 1"
                           ) as err:
            prepare_dataset("clear", table, tmp_path / "out", cfg())
        assert Path(err.value.path) == table
    rows.drop(columns=["patient_id"]).to_csv(table, index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['patient_id'\]"):
        prepare_dataset("clear", table, tmp_path / "out", cfg())
    with pytest.raises(ConfigError, match="dims 2"):
        prepare_dataset("clear", table, tmp_path / "out", cfg(dims=3))


def test_clear_empty_flags_duplicates_and_nifti_slices(tmp_path: Path) -> None:
    root = tmp_path / "clear"
    slice2d = np.zeros((12, 10), np.float32)
    slice2d[2:10, 2:8] = 50
    save(slice2d, np.eye(4), root / "p1" / "a.nii.gz")
    save(np.ones((12, 10, 4), np.float32), np.eye(4), root / "p1" / "vol.nii.gz")
    pd.DataFrame({"image": ["p1/a.nii.gz", "p1/vol.nii.gz", "a.nii.gz"], "lesion_present": ["", "1", "0"],
                  "patient_id": ["p1", "p1", "p1"]}).to_csv(root / "lesions.csv", index=False)
    ds = prepare_dataset("clear", root / "lesions.csv", tmp_path / "out", cfg())
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert reasons["a.nii.gz"] == "line 4: p1/a.nii.gz is already listed on line 2"  # found as p1/a.nii.gz
    assert "a CLEAR image is one 2D slice" in reasons["p1/vol.nii.gz"]
    assert ds.slices is not None and ds.slices["lesion"].tolist() == [-1]  # empty cell: unknown
    assert float(ds.slice(0).max()) == pytest.approx(50.0)  # NIfTI values as stored
