"""M3D export: dataset.json + <patient>/<series>/img.npy (1, D, H, W) in [0, 1] + text.txt; round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from support.layouts import tree_state, write_bids, write_ctrate

from radlens.cli import main
from radlens.common.atomic import read_marker
from radlens.errors import ConfigError, InputError
from radlens.prepare.exporters.m3d import export_m3d
from radlens.prepare.exporters.mrclip import export_mrclip
from radlens.prepare.pipeline import default_config, prepare_dataset


def test_m3d_round_trip(tmp_path: Path) -> None:
    write_bids(tmp_path / "bids", subjects=3)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "prepared", dataclasses.replace(default_config("bids"), dims=3))
    assert main(["export", "m3d", str(ds.path), str(tmp_path / "m3d")]) == 0
    listing = json.loads((tmp_path / "m3d" / "dataset.json").read_text())
    assert sum(len(v) for v in listing.values()) == len(ds.series)
    sample = listing["train"][0]
    img = np.load(tmp_path / "m3d" / sample["image"])
    assert img.dtype == np.float32 and img.shape == (1, 4, 12, 12) and 0.0 <= img.min() and img.max() <= 1.0
    series_id = Path(sample["image"]).parent.name
    np.testing.assert_array_equal(img, np.asarray(ds.array(series_id)).transpose(0, 3, 2, 1))
    back = prepare_dataset("m3d", tmp_path / "m3d", tmp_path / "back")
    assert back.card["counts"]["series"] == len(ds.series) and back.card["counts"]["failures"] == 0
    orig = ds.series.set_index("series_id")
    for _, row in back.series.iterrows():
        sid = row["series_id"][len(row["patient_id"]) + 1 :]  # "<patient>_<series>"
        np.testing.assert_array_equal(back.array(row["series_id"]), ds.array(sid))
        assert (row["text"], row["split"], row["patient_id"]) == (orig.loc[sid, "text"], orig.loc[sid, "split"], orig.loc[sid, "patient_id"])
    # The patient comes back from each entry's patient_id key, not from the folder names.
    assert {e["patient_id"] for v in listing.values() for e in v} == set(ds.series["patient_id"])


def test_ct_values_are_mapped_to_unit_range(tmp_path: Path) -> None:
    write_ctrate(tmp_path / "ct")
    cfg = default_config("ct-rate")
    cfg = dataclasses.replace(cfg, spatial=dataclasses.replace(cfg.spatial, target_spacing=(3.0, 3.0, 6.0), shape=(8, 8, 4)))
    ds = prepare_dataset("ct-rate", tmp_path / "ct", tmp_path / "prepared", cfg, limit=2)
    export_m3d(ds.path, tmp_path / "m3d")
    listing = json.loads((tmp_path / "m3d" / "dataset.json").read_text())
    first = next(s for v in listing.values() for s in v)
    img = np.load(tmp_path / "m3d" / first["image"])
    # HU/1000 in [-1, 1] -> [0, 1]: air (-1000 HU) is 0.
    assert np.isclose(img.min(), 0.0) and img.max() <= 1.0
    assert (tmp_path / "m3d" / first["text"]).read_text().startswith("Findings of")


def test_export_never_writes_into_the_prepared_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``export m3d X X`` (or into a folder inside X, or around it) is refused before anything is written."""
    write_bids(tmp_path / "bids", subjects=1)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "prepared", dataclasses.replace(default_config("bids"), dims=3))
    before = tree_state(ds.path)
    for out, words in ((ds.path, "is the prepared dataset folder"), (ds.path / "m3d", "is inside the prepared dataset folder"),
                       (tmp_path, "holds the prepared dataset folder")):
        assert main(["export", "m3d", str(ds.path), str(out)]) == 2
        assert f"output {out.resolve()} {words} {ds.path.resolve()}: radlens never writes" in capsys.readouterr().err
        with pytest.raises(ConfigError, match="radlens never writes"):
            export_mrclip(ds.path, out)
    assert tree_state(ds.path) == before and json.loads((ds.path / "dataset.json").read_text())["dims"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bids", "prepared"]


def test_export_is_staged_and_rerunnable(tmp_path: Path) -> None:
    """The folder appears whole (with radlens' marker); a rerun replaces it; a folder of someone else's files is refused."""
    write_bids(tmp_path / "bids", subjects=1)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "prepared", dataclasses.replace(default_config("bids"), dims=3))
    export_m3d(ds.path, tmp_path / "m3d")
    assert read_marker(tmp_path / "m3d") is not None and (tmp_path / "m3d" / "dataset.json").is_file()
    export_m3d(ds.path, tmp_path / "m3d")  # a rerun replaces what radlens wrote
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds files radlens did not write"):
        export_m3d(ds.path, tmp_path / "theirs")
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["notes.txt"]
