"""CSV import: required columns checked before any work, 2D images and volumes, findings, patients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.layouts import tree_state, write_bids

from radlens.cli import main
from radlens.errors import InputError
from radlens.prepare import pipeline
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig


def cfg2d():  # type: ignore[no-untyped-def]
    return dataclasses.replace(default_config("csv"), slicing=SliceConfig(slice_shape=(8, 8), min_foreground=0.0))


def test_missing_columns_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "src" / "data.csv"
    table.parent.mkdir()
    pd.DataFrame({"image": ["a.png"], "caption": ["x"]}).to_csv(table, index=False)
    monkeypatch.setattr(pipeline, "prepare_series", lambda *a: pytest.fail("work started"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['text'\]"):
        prepare_dataset("csv", table, tmp_path / "out", cfg2d())


def test_png_rows_with_findings_and_patients(tmp_path: Path) -> None:
    rows = []
    src = tmp_path / "src"
    for i in range(6):
        path = src / "img" / f"p{i % 3}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 40 * i + 10, np.uint8)).save(path)
        rows.append({"filepath": f"img/p{i % 3}/{i}.png", "text": f"image {i}", "label": i % 2, "nodule": i % 2,
                     "patient_id": f"p{i % 3}", "split": ["train", "train", "test"][i % 3]})
    rows.append({"filepath": "img/missing.png", "text": "gone", "label": 0, "nodule": 0, "patient_id": "p9", "split": "train"})
    pd.DataFrame(rows).to_csv(src / "data.csv", index=False)
    ds = prepare_dataset("csv", src / "data.csv", tmp_path / "out", cfg2d())
    assert ds.failures[["path", "reason"]].values.tolist() == [["img/missing.png", "no such file"]]
    assert ds.card["findings"] == ["nodule"] and len(ds.slices) == 6
    s = ds.series.set_index("series_id")
    assert s.loc["img_p1_4", "split"] == "train" and s.loc["img_p2_5", "split"] == "test"  # kept from the CSV
    assert s.loc["img_p1_4", "label"] == 0 and s.loc["img_p1_4", "nodule"] == 0 and s.loc["img_p1_1", "nodule"] == 1
    assert np.allclose(ds.slice("img_p1_4:0"), 170 / 255)


def test_volume_rows(tmp_path: Path) -> None:
    src = tmp_path / "src"
    paths = write_bids(src / "bids", subjects=1)
    pd.DataFrame({"path": [str(p) for p in paths], "text": ["a", "b"]}).to_csv(src / "vols.csv", index=False)
    cfg = dataclasses.replace(default_config("csv"), dims=3)
    ds = prepare_dataset("csv", src / "vols.csv", tmp_path / "out", cfg)
    assert list(ds.series["text"]) == ["a", "b"] and ds.array(ds.series["series_id"].iat[0]).shape == (1, 12, 12, 4)
    assert ds.card["modality"] == "MR"  # from the sidecar next to the volume
    # Absolute paths inside the CSV's folder are fine, and the tables record them relative to it.
    assert list(ds.series["source_path"]) == [p.relative_to(src).as_posix() for p in paths]
    flat_src = tmp_path / "flat"
    flat_src.mkdir()
    flat = flat_src / "flat.png"
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(flat)
    pd.DataFrame({"path": [str(flat)], "text": ["2d"]}).to_csv(flat_src / "flat.csv", index=False)
    with pytest.raises(InputError, match="nothing usable"):
        prepare_dataset("csv", flat_src / "flat.csv", tmp_path / "out2", cfg)
    assert "3D volume is needed" in pd.read_csv(tmp_path / "out2" / "failures.csv")["reason"].iat[0]


def png_table(folder: Path, paths: list[str], **columns: list[object]) -> Path:
    """A CSV in ``folder`` listing ``paths`` (PNGs written where they fall inside ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel in paths:
        target = (folder / rel).resolve()
        if target.is_relative_to(folder.resolve()) and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 90, np.uint8)).save(target)
    table = folder / "data.csv"
    pd.DataFrame({"filepath": paths, "text": [f"t{i}" for i in range(len(paths))], **columns}).to_csv(table, index=False)
    return table


def test_output_in_or_around_the_source_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = png_table(tmp_path / "src", ["a.png", "b.png"])
    before = tree_state(tmp_path / "src")
    for out, words in ((tmp_path / "src" / "prepared", "is inside the source folder"), (tmp_path / "src", "is the source folder"),
                       (tmp_path, "holds the source folder")):
        assert main(["prepare", "csv", str(table), str(out)]) == 2
        err = capsys.readouterr().err
        assert f"output {out.resolve()} {words} {(tmp_path / 'src').resolve()}: radlens never writes" in err
    assert tree_state(tmp_path / "src") == before and not (tmp_path / "src" / "prepared").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_paths_leaving_the_folder_are_refused_naming_the_row(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(outside)
    cases = [
        (["a.png", "../elsewhere.png"], r"data.csv: row 2 filepath: '../elsewhere.png' goes up with '..'"),
        (["a.png", "sub/../../elsewhere.png"], r"row 2 filepath: 'sub/../../elsewhere.png' goes up with '..'"),
        ([str(outside), "a.png"], r"row 1 filepath: absolute path '.*elsewhere.png' is outside the source folder"),
    ]
    for paths, message in cases:
        table = png_table(tmp_path / "src", paths)
        with pytest.raises(InputError, match=message):
            prepare_dataset("csv", table, tmp_path / "out", cfg2d())
        assert not (tmp_path / "out").exists()
    table = png_table(tmp_path / "src", ["a.png", "b.png"], mask=["", "../elsewhere.png"])
    with pytest.raises(InputError, match=r"row 2 mask: '../elsewhere.png' goes up with '..'"):
        prepare_dataset("csv", table, tmp_path / "out", cfg2d())


def test_rows_colliding_on_one_series_id_are_refused_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "prepare_series", lambda *a: pytest.fail("work started"))
    for paths, row, sid in ((["x.png", "a/b.png", "a_b.png"], "rows 2 and 3", "a_b"), (["x.png", "y.png", "x.jpg"], "rows 1 and 3", "x"),
                            (["x.png", "./x.png"], "rows 1 and 2", "x")):
        table = png_table(tmp_path / "src", paths)
        with pytest.raises(InputError, match=rf"data.csv: {row} give the same series id '{sid}'"):
            prepare_dataset("csv", table, tmp_path / "out", cfg2d())


def test_patient_from_groups_rows_without_a_patient_column(tmp_path: Path) -> None:
    table = png_table(tmp_path / "src", ["scans/p1/s1/0.png", "scans/p1/s2/0.png", "scans/p2/s1/0.png"])
    ds = prepare_dataset("csv", table, tmp_path / "folder", cfg2d())
    assert list(ds.series["patient_id"]) == ["scans_p1_s1", "scans_p1_s2", "scans_p2_s1"]
    ds = prepare_dataset("csv", table, tmp_path / "parent", dataclasses.replace(cfg2d(), patient_from="parent"))
    assert list(ds.series["patient_id"]) == ["scans_p1", "scans_p1", "scans_p2"]
