"""CT-RATE import: ids, report columns, 18 findings, explicit HU handling, split basis."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from support.layouts import tree_state, write_ctrate

from radlens.errors import ConfigError
from radlens.prepare.importers.ctrate import FINDINGS
from radlens.prepare.intensity import IntensityConfig
from radlens.prepare.pipeline import default_config, prepare_dataset


def phantom_config(**changes):  # type: ignore[no-untyped-def]
    """CT-CLIP's pipeline at phantom size: 3x3x6 mm, 8x8x4 voxels."""
    cfg = default_config("ct-rate")
    spatial = dataclasses.replace(cfg.spatial, target_spacing=(3.0, 3.0, 6.0), shape=(8, 8, 4))
    return dataclasses.replace(cfg, spatial=spatial, **changes)


def test_defaults_are_ct_clip() -> None:
    cfg = default_config("ct-rate")
    assert cfg.dims == 3 and cfg.spatial.target_spacing == (0.75, 0.75, 1.5) and cfg.spatial.shape == (480, 480, 240)
    assert cfg.intensity == IntensityConfig(ct_window=(-1000.0, 1000.0), ct_output="hu/1000")


def test_ctrate_import(tmp_path: Path) -> None:
    root = tmp_path / "ctrate"
    write_ctrate(root)
    before = tree_state(root)
    ds = prepare_dataset("ct-rate", root, tmp_path / "out", phantom_config())
    assert tree_state(root) == before
    s = ds.series.set_index("series_id")
    assert s.loc["train_1_b_1", "patient_id"] == "train_1" and s.loc["train_1_b_1", "scan_id"] == "train_1_b"
    assert s.loc["valid_2_a_1", "text"] == "Findings of valid_2_a_1."
    assert s.loc["valid_2_a_1", "report_impression"] == "No acute finding."
    assert s.loc["valid_2_a_1", "report_technique"] == "Non-contrast chest CT."
    assert ds.card["findings"] == list(FINDINGS) and str(s[FINDINGS[0]].dtype) == "int8"
    # CT-RATE's valid part is the test set; the train part is split by patient.
    assert set(s.loc[s["source_split"] == "valid", "split"]) == {"test"}
    assert set(s.loc[s["source_split"] == "train", "split"]) <= {"train", "validation"}
    assert (s.groupby("patient_id")["split"].nunique() == 1).all()
    # HU: raw volumes were rescaled, the one stored in HU was not; inside the box 40 + 10*i HU -> /1000.
    for name, i in (("train_1_a_1", 0), ("train_2_a_1", 2)):
        arr = ds.array(name)
        assert arr.shape == (1, 8, 8, 4)
        assert np.isclose(arr[0, 4, 4, 2], (40 + 10 * i) / 1000, atol=1e-4)
        assert np.isclose(arr[0, 0, 0, 2], -1.0)


def test_hu_handling_is_never_assumed(tmp_path: Path) -> None:
    root = tmp_path / "ctrate"
    write_ctrate(root, stored_as_hu_column=False)
    with pytest.raises(ConfigError, match="auto-column"):
        prepare_dataset("ct-rate", root, tmp_path / "a", phantom_config())
    yes = prepare_dataset("ct-rate", root, tmp_path / "yes", phantom_config(already_hu="yes"))
    no = prepare_dataset("ct-rate", root, tmp_path / "no", phantom_config(already_hu="no"))
    # "yes" reads raw values as HU (too bright by 1024), "no" applies the intercept.
    assert np.isclose(no.array("train_1_a_1")[0, 4, 4, 2], 0.04, atol=1e-4)
    assert np.isclose(yes.array("train_1_a_1")[0, 4, 4, 2], 1.0)


def test_listed_volume_without_file(tmp_path: Path) -> None:
    root = tmp_path / "ctrate"
    write_ctrate(root)
    next(root.rglob("train_3_a_1.nii.gz")).unlink()
    ds = prepare_dataset("ct-rate", root, tmp_path / "out", phantom_config(), limit=3)
    assert ds.failures.iloc[0].tolist() == ["train_3_a_1.nii.gz", "discover", "listed in the reports CSV but no such file"]
