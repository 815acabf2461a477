"""M3D import: dataset.json splits, (1, D, H, W) axis mapping, bad samples."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from radlens.errors import ConfigError, InputError
from radlens.prepare.pipeline import default_config, prepare_dataset


def sample(root: Path, name: str, img: np.ndarray, text: str) -> dict[str, str]:
    (root / name).mkdir(parents=True)
    np.save(root / name / "img.npy", img)
    (root / name / "text.txt").write_text(text)
    return {"image": f"{name}/img.npy", "text": f"{name}/text.txt"}


def test_m3d_import(tmp_path: Path) -> None:
    root = tmp_path / "m3d"
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 5, 7), dtype=np.float32)
    listing = {
        "train": [sample(root, "a", img, "liver lesion"), sample(root, "b", img + 0.0, "normal")],
        "validation": [sample(root, "c", img, "x")],
        "test": [sample(root, "d", np.zeros((1, 3, 5, 7), np.float32), "empty"), {"image": "e/img.npy", "text": "e/text.txt"}],
        "test1k": [{"image": "a/img.npy", "text": "a/text.txt"}],
    }
    (root / "dataset.json").write_text(json.dumps(listing))
    ds = prepare_dataset("m3d", root, tmp_path / "out")
    s = ds.series.set_index("series_id")
    assert list(s.index) == ["a", "b", "c"] and list(s["split"]) == ["train", "train", "validation"]
    assert s.loc["a", "text"] == "liver lesion"
    arr = ds.array("a")
    assert arr.shape == (1, 7, 5, 3)  # (1, X, Y, Z) = (1, W, H, D)
    np.testing.assert_array_equal(arr, img.transpose(0, 3, 2, 1))
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert "zero" in reasons["d/img.npy"] and "no such file" in reasons["e/img.npy"]
    assert any("D, H, W" in note for note in ds.card["notes"])


def test_m3d_without_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "m3d").mkdir()
    with pytest.raises(InputError, match="no dataset.json"):
        prepare_dataset("m3d", tmp_path / "m3d", tmp_path / "out")


TUTORIAL = {  # dataset.json of the 3D CLIP tutorial, as printed there
    "train": [{"image": "data_folder/000007/img.npy", "text": "data_folder/000007/text.txt"},
              {"image": "data_folder/000008/img.npy", "text": "data_folder/000008/text.txt"}],
    "validation": [{"image": "data_folder/000009/img.npy", "text": "data_folder/000009/text.txt"}],
    "test": [{"image": "data_folder/000010/img.npy", "text": "data_folder/000010/text.txt"}],
}


def write_listing(root: Path, listing: dict) -> dict:
    """Sample folders for every entry of ``listing`` (a small (1, D, H, W) image each) and dataset.json."""
    rng = np.random.default_rng(1)
    for entries in listing.values():
        for entry in entries:
            folder = root / Path(entry["image"]).parent
            if not folder.exists():
                sample(root, folder.relative_to(root).as_posix(), rng.random((1, 3, 4, 5), dtype=np.float32), f"report {folder.name}")
    (root / "dataset.json").write_text(json.dumps(listing))
    return listing


def test_the_tutorial_layout_gives_one_patient_per_sample_folder(tmp_path: Path) -> None:
    write_listing(tmp_path / "m3d", TUTORIAL)
    ds = prepare_dataset("m3d", tmp_path / "m3d", tmp_path / "out")
    s = ds.series.set_index("series_id")
    assert ds.card["counts"]["failures"] == 0 and list(s.index) == [f"data_folder_0000{i:02d}" for i in (7, 8, 9, 10)]
    assert list(s["patient_id"]) == list(s.index) and list(s["split"]) == ["train", "train", "validation", "test"]
    assert list(s["source_path"]) == [e["image"] for k in ("train", "validation", "test") for e in TUTORIAL[k]]
    assert s.loc["data_folder_000009", "text"] == "report 000009"


def m3d_config(**changes):  # type: ignore[no-untyped-def]
    return dataclasses.replace(default_config("m3d"), **changes)


def test_grouping_rules_parent_and_regex(tmp_path: Path) -> None:
    nested = {"train": [{"image": f"scans/{p}/{s}/img.npy", "text": f"scans/{p}/{s}/text.txt"} for p, s in
                        (("p1", "ct"), ("p1", "mr"), ("p2", "ct"))],
              "test": [{"image": "scans/p3/ct/img.npy", "text": "scans/p3/ct/text.txt"}]}
    write_listing(tmp_path / "nested", nested)
    ds = prepare_dataset("m3d", tmp_path / "nested", tmp_path / "parent", m3d_config(patient_from="parent"))
    assert list(ds.series["patient_id"]) == ["scans_p1", "scans_p1", "scans_p2", "scans_p3"]
    flat = {"train": [{"image": f"{n}/img.npy", "text": f"{n}/text.txt"} for n in ("p1_a", "p1_b", "p2_a")],
            "test": [{"image": "p3_a/img.npy", "text": "p3_a/text.txt"}]}
    write_listing(tmp_path / "flat", flat)
    ds = prepare_dataset("m3d", tmp_path / "flat", tmp_path / "regex", m3d_config(patient_from=r"^(?P<patient>p\d+)_"))
    assert list(ds.series["patient_id"]) == ["p1", "p1", "p2", "p3"]
    # A rule that finds no patient names the entry; a pattern that is not one is a config error; nothing is written.
    with pytest.raises(InputError, match=r"dataset.json: train\[0\]: patient_from='parent' finds no patient in 'p1_a/img.npy'"):
        prepare_dataset("m3d", tmp_path / "flat", tmp_path / "x", m3d_config(patient_from="parent"))
    with pytest.raises(InputError, match=r"train\[0\]: patient_from='\^q' finds no patient in 'p1_a/img.npy' \(needs a match\)"):
        prepare_dataset("m3d", tmp_path / "flat", tmp_path / "x", m3d_config(patient_from="^q"))
    with pytest.raises(ConfigError, match=r"patient_from must be 'folder', 'parent' or a regular expression; 'p\(': "):
        prepare_dataset("m3d", tmp_path / "flat", tmp_path / "x", m3d_config(patient_from="p("))
    assert not (tmp_path / "x").exists()


def test_paths_must_stay_inside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "m3d"
    write_listing(root, TUTORIAL)
    sample(tmp_path, "outside", np.ones((1, 3, 4, 5), np.float32), "not ours")
    inside = str(root / "data_folder/000008/img.npy")
    cases = {
        "../outside/img.npy": r"train\[0\] image: '../outside/img.npy' goes up with '..'",
        "data_folder/../../outside/img.npy": r"train\[0\] image: 'data_folder/../../outside/img.npy' goes up with '..'",
        str(tmp_path / "outside/img.npy"): r"train\[0\] image: absolute path '.*outside/img.npy' is outside the source folder",
    }
    for image, message in cases.items():
        listing = {**TUTORIAL, "train": [{"image": image, "text": "data_folder/000007/text.txt"}]}
        (root / "dataset.json").write_text(json.dumps(listing))
        with pytest.raises(InputError, match=rf"dataset.json: {message}"):
            prepare_dataset("m3d", root, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    # An absolute path inside the folder is read, and the tables record it relative to the folder.
    listing = {**TUTORIAL, "train": [{"image": inside, "text": str(root / "data_folder/000008/text.txt")}]}
    (root / "dataset.json").write_text(json.dumps(listing))
    ds = prepare_dataset("m3d", root, tmp_path / "out")
    assert ds.series["source_path"].iat[0] == "data_folder/000008/img.npy"
    assert not any(str(tmp_path) in str(v) for v in ds.series["source_path"])


def test_two_samples_with_one_series_id_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "m3d"
    listing = {"train": [{"image": "a_b/img.npy", "text": "a_b/text.txt"}], "test": [{"image": "a/b/img.npy", "text": "a/b/text.txt"}]}
    write_listing(root, listing)
    with pytest.raises(InputError, match=r"dataset.json: train\[0\] and test\[0\] both give the series id 'a_b'"):
        prepare_dataset("m3d", root, tmp_path / "out")


def test_undecodable_text_is_a_failure_row(tmp_path: Path) -> None:
    root = tmp_path / "m3d"
    write_listing(root, TUTORIAL)
    (root / "data_folder/000008/text.txt").write_bytes(b"caf\xe9 \xff")
    ds = prepare_dataset("m3d", root, tmp_path / "out")
    assert ds.failures["path"].tolist() == ["data_folder/000008/img.npy"]
    assert ds.failures["reason"].iat[0].startswith("data_folder/000008/text.txt is not UTF-8 text")
    (root / "dataset.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError, match="dataset.json: not UTF-8 text"):
        prepare_dataset("m3d", root, tmp_path / "out2")
