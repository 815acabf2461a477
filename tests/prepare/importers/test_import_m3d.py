"""M3D import: dataset.json splits, (1, D, H, W) axis mapping, bad samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radlens.errors import InputError
from radlens.prepare.pipeline import prepare_dataset


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
