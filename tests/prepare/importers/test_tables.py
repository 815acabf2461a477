"""Bad tables: a broken table is refused before any work, naming the file and line; a bad row is one
failure row naming the file, line and column, and the rest of the batch is prepared."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.layouts import write_ctrate

from radlens.errors import InputError
from radlens.prepare.importers.tables import binary_value, integer_value, read_keyed, read_table, read_text
from radlens.prepare.pipeline import default_config, prepare_dataset

REPORT_HEADER = "VolumeName,ClinicalInformation_EN,Technique_EN,Findings_EN,Impressions_EN\n"


def ct_config():  # type: ignore[no-untyped-def]
    cfg = default_config("ct-rate")
    return dataclasses.replace(cfg, spatial=dataclasses.replace(cfg.spatial, target_spacing=(3.0, 3.0, 6.0), shape=(8, 8, 4)))


@pytest.fixture()
def ctrate(tmp_path: Path) -> Path:
    root = tmp_path / "ctrate"
    write_ctrate(root)
    return root


def edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a CSV after ``change(frame)`` (all cells as text, empty cells kept empty)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = change(frame)
    frame.to_csv(path, index=False)


def set_cell(frame: pd.DataFrame, volume: str, column: str, value: str) -> pd.DataFrame:
    frame.loc[frame["VolumeName"] == f"{volume}.nii.gz", column] = value
    return frame


# --- whole tables -----------------------------------------------------------------------------------


def test_read_table_names_the_file_and_line(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"VolumeName,Findings_EN\nvalid_1_a_1.nii.gz,ok\nvalid_2_a_1.nii.gz,caf\xe9\n")
    with pytest.raises(InputError, match=r"latin.csv: not UTF-8 text: byte 0xe9 on line 3"):
        read_table(latin)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffVolumeName,Findings_EN\nx,é\n".encode())
    assert read_table(bom, ["VolumeName"])["Findings_EN"].tolist() == ["é"]
    unterminated = tmp_path / "open.csv"
    unterminated.write_text('VolumeName,Findings_EN\nx,ok\ny,"never closed\nz,lost\n')
    with pytest.raises(InputError, match=r"open.csv: cannot read as CSV \(an unterminated quote\?\)"):
        read_table(unterminated)
    # A quote closed by a later one swallows the rows between: they would vanish without a word.
    swallowed = tmp_path / "swallowed.csv"
    swallowed.write_text('VolumeName,Findings_EN\nvalid_1_a_1.nii.gz,"forgot to close\nvalid_2_a_1.nii.gz,Normal.\n'
                         'valid_3_a_1.nii.gz,"Normal."\n')
    with pytest.raises(InputError, match=r"swallowed.csv: line 2: the quoted Findings_EN runs on over what looks like "
                                         r"another row \(valid_2_a_1.nii.gz"):
        read_keyed([swallowed], "VolumeName")
    multiline = tmp_path / "multi.csv"  # a real multi-line text is fine, and later lines are counted right
    multiline.write_text('VolumeName,Findings_EN\na.nii.gz,"line one\nline two"\nb.nii.gz,\n')
    table = read_keyed([multiline], "VolumeName")
    assert table.frame.loc["a.nii.gz", "Findings_EN"] == "line one\nline two" and table.source("b.nii.gz") == "multi.csv line 4"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty: no header"):
        read_table(empty)
    with pytest.raises(InputError, match=r"multi.csv: missing column\(s\) \['Impressions_EN'\]"):
        read_table(multiline, ["VolumeName", "Impressions_EN"])
    text = tmp_path / "text.txt"
    text.write_bytes(b"\xff\xfeF\x00")
    with pytest.raises(InputError, match="text.txt: not UTF-8 text: byte 0xff on line 1"):
        read_text(text)


def test_values_are_read_strictly() -> None:
    assert [binary_value(v) for v in (0, 1, 1.0, "0", " 1 ", "1.0", True)] == [0, 1, 1, 0, 1, 1, 1]
    assert [binary_value(v) for v in (2, -1, 0.5, float("nan"), "", "abc", "yes", None)] == [None] * 8
    assert [integer_value(v) for v in (3, 3.0, "3", "-2", " 7 ")] == [3, 3, 3, -2, 7]
    assert [integer_value(v) for v in ("abc", 2.5, float("nan"), "", True, "1e3")] == [None] * 6


def test_duplicate_keys_read_once_or_left_out(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("VolumeName,x\nv1,1\nv2,1\nv3,1\n")
    b.write_text("VolumeName,x\nv1,1\nv2,0\n")
    table = read_keyed([a, b], "VolumeName")
    assert sorted(table.frame.index) == ["v1", "v3"] and table.source("v1") == "a.csv line 2"
    assert table.conflicts == {"v2": "VolumeName listed 2 times with different values (a.csv line 3, b.csv line 3): "
                                     "which is right is unknown"}
    assert table.notes == ["VolumeName v1 listed 2 times with the same values (a.csv line 2, b.csv line 2): read once"]
    a.write_text("VolumeName,x\nv1,1\n,0\n")
    with pytest.raises(InputError, match="a.csv: line 3: empty VolumeName"):
        read_keyed([a], "VolumeName")


@pytest.mark.parametrize(
    ("table", "damage", "message"),
    [
        pytest.param("train_predicted_labels.csv", lambda f: f.drop(columns=["Cardiomegaly"]),
                     r"train_predicted_labels.csv: missing column\(s\) \['Cardiomegaly'\]", id="labels-missing-column"),
        pytest.param("train_reports.csv", lambda f: f.drop(columns=["Findings_EN"]),
                     r"train_reports.csv: missing column\(s\) \['Findings_EN'\]", id="reports-without-findings"),
        pytest.param("validation_reports.csv", None, r"validation_reports.csv: cannot read as CSV \(an unterminated quote",
                     id="reports-unterminated-quote"),
        pytest.param("train_metadata.csv", "latin-1", r"train_metadata.csv: not UTF-8 text: byte 0xe9 on line 2",
                     id="metadata-not-utf8"),
    ],
)
def test_a_broken_table_stops_before_any_work(ctrate: Path, tmp_path: Path, table: str, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    path = ctrate / table
    if damage == "latin-1":
        edit(path, lambda f: f.assign(Manufacturer="Siemens Médical"))
        path.write_bytes(path.read_text().encode("latin-1"))
    elif damage is None:
        path.write_text(path.read_text() + 'valid_9_a_1.nii.gz,Cough,CT,"No effusion.,None\n')
    else:
        edit(path, damage)
    with pytest.raises(InputError, match=message):
        prepare_dataset("ct-rate", ctrate, tmp_path / "out", ct_config())
    assert not (tmp_path / "out" / "arrays").exists(), "no work may start on a broken table"


# --- bad rows: one failure each, the rest prepared ---------------------------------------------------


def test_bad_rows_are_failure_rows_and_the_batch_finishes(ctrate: Path, tmp_path: Path) -> None:
    labels = ctrate / "train_predicted_labels.csv"
    edit(labels, lambda f: set_cell(f, "train_1_b_1", "Cardiomegaly", "abc"))
    edit(labels, lambda f: set_cell(f, "train_3_a_1", "Emphysema", ""))
    edit(labels, lambda f: set_cell(f, "train_4_a_1", "Lung nodule", "2"))
    edit(labels, lambda f: f[f["VolumeName"] != "train_2_a_1.nii.gz"])
    edit(ctrate / "validation_reports.csv", lambda f: set_cell(f, "valid_1_a_1", "Findings_EN", "  "))
    reports = ctrate / "validation_reports.csv"
    edit(reports, lambda f: pd.concat([f, f[f["VolumeName"] == "valid_2_a_1.nii.gz"].assign(Findings_EN="Other text.")]))
    train_reports = ctrate / "train_reports.csv"
    edit(train_reports, lambda f: pd.concat([f, f[f["VolumeName"] == "train_1_a_1.nii.gz"]]))
    extra = ctrate / "dataset" / "train" / "train_5" / "train_5_a"
    extra.mkdir(parents=True)
    shutil.copy(ctrate / "dataset/train/train_2/train_2_a/train_2_a_1.nii.gz", extra / "train_5_a_1.nii.gz")

    ds = prepare_dataset("ct-rate", ctrate, tmp_path / "out", ct_config())
    assert ds.series["series_id"].tolist() == ["train_1_a_1"]
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert reasons == {
        "train_1_b_1.nii.gz": "labels CSV train_predicted_labels.csv line 3: label 'Cardiomegaly' is 'abc', not 0 or 1",
        "train_3_a_1.nii.gz": "labels CSV train_predicted_labels.csv line 4: label 'Emphysema' is empty, not 0 or 1",
        "train_4_a_1.nii.gz": "labels CSV train_predicted_labels.csv line 5: label 'Lung nodule' is 2, not 0 or 1",
        "train_2_a_1.nii.gz": "no row in the labels CSV (every volume needs its 18 finding labels when a labels CSV is given)",
        "valid_1_a_1.nii.gz": "reports CSV validation_reports.csv line 2: empty Findings_EN: the report has no findings, "
                              "so no training text",
        "valid_2_a_1.nii.gz": "reports CSV: VolumeName listed 2 times with different values (validation_reports.csv line 3, "
                              "validation_reports.csv line 4): which is right is unknown",
        "dataset/train/train_5/train_5_a/train_5_a_1.nii.gz": "no row in the reports CSV: not prepared (no report text)",
    }
    assert "VolumeName train_1_a_1.nii.gz listed 2 times with the same values" in " ".join(ds.card["notes"])
    assert ds.series[["Cardiomegaly", "Emphysema"]].to_numpy().tolist() == [[int(v) for v in pd.read_csv(labels).set_index(
        "VolumeName").loc["train_1_a_1.nii.gz", ["Cardiomegaly", "Emphysema"]]]]
    assert np.isfinite(ds.array("train_1_a_1")).all()
    with pytest.raises(InputError, match="valid_2_a_1.nii.gz: reports CSV: VolumeName listed 2 times"):  # the first failure
        prepare_dataset("ct-rate", ctrate, tmp_path / "strict", ct_config(), strict=True)


def test_csv_source_bad_labels_and_text_files(tmp_path: Path) -> None:
    """The csv source: a label "abc" or an empty finding is one failure row; M3D: a non-UTF-8 text.txt too."""
    from PIL import Image

    root = tmp_path / "csv"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * (i + 2)).save(root / f"img{i}.png")
    (root / "data.csv").write_text("filepath,text,label,lesion\nimg0.png,a,1,1\nimg1.png,b,abc,0\nimg2.png,c,2,\n")
    ds = prepare_dataset("csv", root / "data.csv", tmp_path / "out", dataclasses.replace(default_config("csv")))
    assert ds.series["series_id"].tolist() == ["img0"]
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert reasons["img1.png"] == "data.csv row 2: label 'abc' is not an integer class id"
    assert reasons["img2.png"] == "data.csv row 3: label 'lesion' is empty, not 0 or 1"

    m3d = tmp_path / "m3d"
    for name, text in (("000001", b"Fine text."), ("000002", "Caf\xe9".encode("latin-1"))):
        (m3d / "data" / name).mkdir(parents=True)
        np.save(m3d / "data" / name / "img.npy", np.random.default_rng(0).random((1, 4, 8, 8), dtype=np.float32))
        (m3d / "data" / name / "text.txt").write_bytes(text)
    (m3d / "dataset.json").write_text(json.dumps({"train": [{"image": f"data/{n}/img.npy", "text": f"data/{n}/text.txt"}
                                                            for n in ("000001", "000002")]}))
    ds = prepare_dataset("m3d", m3d, tmp_path / "m3d-out")
    assert len(ds.series) == 1 and "UTF-8" in ds.failures["reason"].iat[0] and "text.txt" in ds.failures["reason"].iat[0]
