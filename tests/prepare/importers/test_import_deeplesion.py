"""DeepLesion: 16-bit PNGs (HU + 32768) stacked per series folder, DL_info.csv boxes as key-slice label maps."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.lesion_layouts import BODY, OFFSET, DeepLesionTree, write_deeplesion

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import parse_boxes
from radlens.prepare import pipeline
from radlens.prepare.importers import deeplesion
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.splits import SplitConfig

SHAPE = (48, 48)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> DeepLesionTree:
    return write_deeplesion(tmp_path_factory.mktemp("deeplesion"))


def cfg(**changes: object) -> pipeline.PrepareConfig:
    preset = default_config("deeplesion")
    return dataclasses.replace(preset, slicing=dataclasses.replace(preset.slicing, slice_shape=SHAPE), **changes)


def stored_range(lo: int, hi: int, ratio: float, offset: int) -> tuple[int, int]:
    """Where source pixels [lo, hi) land after a nearest-exact resize by ``ratio`` (stored/source) and a pad."""
    return offset + math.ceil(lo * ratio - 0.5), offset + math.ceil(hi * ratio - 0.5)


def test_deeplesion_2d_boxes_lesions_failures(tree: DeepLesionTree, tmp_path: Path) -> None:
    ds = prepare_dataset("deeplesion", tree.root, tmp_path / "out", cfg())
    series = ds.series.set_index("series_id")
    assert list(series.index) == ["000001_01_01", "000001_02_01_001-003", "000001_02_01_010-011", "000002_01_02"]
    assert ds.labels == {0: "background", 1: "lesion"} and ds.card["modality"] == "CT"
    # Bad rows are failures naming DL_info.csv and their line; the absent folder's row is not one.
    reasons = ds.failures.set_index("path")["reason"]
    table_lines = sorted(reasons.loc[["DL_info.csv"]].tolist())
    assert len(table_lines) == len(tree.bad_lines)
    for (line, why), reason in zip(sorted(tree.bad_lines.items()), table_lines):
        assert reason.startswith(f"line {line} (") and why in reason
    assert "no usable DL_info.csv row" in reasons["Images_png/000004_01_01"]
    assert "000003" not in " ".join(ds.failures["reason"])
    # Patients, studies and DeepLesion's own split (by patient).
    assert series.loc["000001_02_01_010-011", "patient_id"] == "000001"
    assert series.loc["000001_02_01_001-003", "study_id"] == "000001_02"
    assert set(series.loc[series["patient_id"] == "000001", "split"]) == {"train"}
    assert series.loc["000002_01_02", "split"] == "test" == series.loc["000002_01_02", "official_split"]
    assert list(series.loc["000001_01_01", "slice_numbers"]) == [112, 111, 110, 109, 108]
    lesions = json.loads(series.loc["000001_01_01", "lesions"])
    assert [(les["line"], les["key_slice"], les["type_name"]) for les in lesions] == [
        (2, 110, "liver"), (3, 110, "lung"), (4, 111, "unknown")]
    # One slice per PNG; lesion exactly on the key slices (slice_index counts feet to head).
    slices = ds.slices.set_index("slice_id")
    assert len(slices) == 5 + 3 + 2 + 3
    marked = sorted(slices.index[slices["lesion"] == 1])
    assert marked == ["000001_01_01:1", "000001_01_01:2", "000001_02_01_001-003:1", "000002_01_02:1"]
    assert (slices["lesion"] >= 0).all() and series.loc["000001_02_01_010-011", "labels_present"].tolist() == []
    # The key slice's box after the fit: 64 x 96 pixels of 0.8 mm -> 32 x 48 (ratio 0.5), padded 8 rows on top.
    (x1, y1, x2, y2), = tree.boxes["000001_01_01_111.png"]
    r0, c0, r1, c1 = deeplesion.pixel_bounds((x1, y1, x2, y2))
    assert (r0, c0, r1, c1) == (20, 50, 31, 57)
    h0, h1 = stored_range(r0, r1, 0.5, 8)
    w0, w1 = stored_range(c0, c1, 0.5, 0)
    box = parse_boxes(slices.loc["000001_01_01:1", "boxes"])
    assert box == {1: (h0, w0, h1, w1)}
    assert abs(h0 - (8 + y1 * 0.5)) <= 1 and abs(w1 - x2 * 0.5) <= 1.5  # the DL_info box, scaled
    mask = ds.slice_mask("000001_01_01:1")
    assert mask is not None and int(mask.sum()) == (h1 - h0) * (w1 - w0)
    # Two lesions on one key slice: their union box; the series keeps each in ``lesions``.
    (a0, b0, a1, b1), (a2, b2, a3, b3) = (deeplesion.pixel_bounds(tuple(b)) for b in tree.boxes["000001_01_01_110.png"])
    (u0, u1), (v0, v1) = stored_range(min(a0, a2), max(a1, a3), 0.5, 8), stored_range(min(b0, b2), max(b1, b3), 0.5, 0)
    assert parse_boxes(slices.loc["000001_01_01:2", "boxes"]) == {1: (u0, v0, u1, v1)}
    assert list(slices.loc["000001_01_01:2", "labels_present"]) == [1]
    # The lesion is brighter than the body on the stored slice, inside its box.
    image = ds.slice("000001_01_01:1")
    assert float(image[h0:h1, w0:w1].mean()) > float(image[8:40, :].mean())


def test_deeplesion_hu_and_geometry_3d(tree: DeepLesionTree, tmp_path: Path) -> None:
    # The importer's volume: stored value - 32768 is HU; stored axes column/row/slice -> RAS.
    config = cfg(dims=3)
    found = deeplesion.discover(tree.root, config)
    item = next(i for i in found.items if i.series_id == "000002_01_02")
    volume = deeplesion.load(item, config)
    png = np.asarray(Image.open(tree.root / "Images_png" / "000002_01_02" / "006.png"))
    assert int(png[10, 30]) == OFFSET + BODY
    assert volume.hu and volume.shape == (64, 64, 3) and volume.spacing == pytest.approx((0.6, 0.6, 1.0))
    assert np.allclose(np.diag(volume.affine)[:3], [0.6, 0.6, 1.0])
    # Slice 6 is RAS index 1 (numbers run head to feet); column c -> X = W-1-c, row r -> Y = H-1-r.
    assert volume.array[0, 63 - 30, 63 - 10, 1] == BODY
    assert [volume.array[0, 63 - 3, 63 - 2, z] for z in range(3)] == [7, 6, 5]  # each slice's number in HU
    ds = prepare_dataset("deeplesion", tree.root, tmp_path / "out", config)
    row = ds.series.set_index("series_id").loc["000002_01_02"]
    assert row["plane"] == "axial" and list(row["spacing"]) == pytest.approx([0.6, 0.6, 1.0])
    array = ds.array("000002_01_02")
    assert array[0, 63 - 30, 63 - 10, 1] == pytest.approx(BODY / 1000)  # HU/1000, window [-1500, 3071]
    mask = ds.mask("000002_01_02")
    r0, c0, r1, c1 = deeplesion.pixel_bounds(tuple(tree.boxes["000002_01_02_006.png"][0]))
    expected = np.zeros((64, 64, 3), np.uint8)
    expected[64 - c1 : 64 - c0, 64 - r1 : 64 - r0, 1] = 1
    assert mask is not None and np.array_equal(mask[0], expected)
    assert parse_boxes(row["boxes"]) == {1: (64 - c1, 64 - r1, 1, 64 - c0, 64 - r0, 2)}


def test_deeplesion_splits_by_patient_or_official(tree: DeepLesionTree, tmp_path: Path) -> None:
    own = cfg(split=SplitConfig(keep_existing=False, ratios=(0.5, 0.0, 0.5)))
    ds = prepare_dataset("deeplesion", tree.root, tmp_path / "own", own)
    assert ds.series.groupby("patient_id")["split"].nunique().eq(1).all()
    assert sorted(ds.series.drop_duplicates("patient_id")["split"]) == ["test", "train"]
    # A patient that DL_info.csv puts in two splits: an error naming the table, with the way out.
    copy = tmp_path / "conflict"
    for path in (tree.root / "Images_png").rglob("*.png"):
        target = copy / path.relative_to(tree.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    table = pd.read_csv(tree.root / "DL_info.csv")
    table.loc[3, "Train_Val_Test"] = 2  # 000001_02_01_002.png
    table.to_csv(copy / "DL_info.csv", index=False)
    with pytest.raises(InputError, match=r"patient 000001 is in Train_Val_Test train \(line 2\) and validation "
                                         r"\(line 5\).*keep_existing false") as err:
        prepare_dataset("deeplesion", copy, tmp_path / "out", cfg())
    assert str(err.value.path).endswith("DL_info.csv")
    ds = prepare_dataset("deeplesion", copy, tmp_path / "out2", own)
    assert set(ds.series["official_split"]) == {"train", "validation", "test"}


def test_deeplesion_refusals(tree: DeepLesionTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="HU \\+ 32768"):
        prepare_dataset("deeplesion", tree.root, tmp_path / "out", cfg(already_hu="no"))
    root = tmp_path / "dl"
    (root / "Images_png" / "000005_01_01").mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(root / "Images_png" / "000005_01_01" / "001.png")
    pd.DataFrame({"File_name": ["000005_01_01_001.png"], "Bounding_boxes": ["1, 1, 4, 4"]}).to_csv(
        root / "DL_info.csv", index=False)
    monkeypatch.setattr(pipeline, "prepare_series", lambda *a: pytest.fail("work started"))
    with pytest.raises(InputError, match=r"missing column\(s\) \['Patient_index'"):
        prepare_dataset("deeplesion", root, tmp_path / "out", cfg())
    monkeypatch.undo()
    row = {"File_name": "000005_01_01_001.png", "Patient_index": 5, "Study_index": 1, "Series_ID": 1,
           "Key_slice_index": 1, "Bounding_boxes": "1, 1, 4, 4", "Spacing_mm_px_": "1, 1, 1"}
    pd.DataFrame([row]).to_csv(root / "DL_info.csv", index=False)
    with pytest.raises(InputError, match="nothing usable"):
        prepare_dataset("deeplesion", root, tmp_path / "out", cfg())
    reason = pd.read_csv(tmp_path / "out" / "failures.csv").set_index("path")["reason"]["Images_png/000005_01_01"]
    assert "001.png: L PNG; DeepLesion slices are 16-bit grey PNGs storing HU + 32768" in reason


def test_deeplesion_cli(tree: DeepLesionTree, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main(["prepare", "deeplesion", str(tree.root), str(out), "--slicing.slice_shape", "[32,32]"]) == 0
    card = json.loads((out / "dataset.json").read_text())
    assert card["source"]["kind"] == "deeplesion" and card["config"]["already_hu"] == "yes"
    assert any("HU + 32768" in note for note in card["notes"]) and card["counts"]["series"] == 4
