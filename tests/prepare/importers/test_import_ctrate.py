"""CT-RATE import: ids, report columns, 18 findings, explicit HU handling, split basis."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.layouts import CTRATE_VOLUMES, ctrate_hu, tree_state, write_ctrate, write_ctrate_repo

from radlens.errors import ConfigError, InputError
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


def assert_hu(arr: np.ndarray, name: str) -> None:
    """Soft tissue of the volume's body box and air, after CT-CLIP's window (HU / 1000)."""
    assert np.isclose(arr[0, 4, 4, 2], CTRATE_VOLUMES[name][1] / 1000, atol=1e-4) and np.isclose(arr[0, 0, 0, 2], -1.0)


@pytest.mark.parametrize("trees", [("raw",), ("fixed",), ("raw", "fixed")])
def test_real_layout_gives_hu_without_a_flag(tmp_path: Path, trees: tuple[str, ...]) -> None:
    """The raw tree (intercepts -1024 and -8192), the fixed tree, and a root holding both: correct HU, said per volume."""
    write_ctrate_repo(tmp_path / "ct", trees)
    ds = prepare_dataset("ct-rate", tmp_path / "ct", tmp_path / "out", phantom_config())
    assert ds.card["counts"]["failures"] == 0 and ds.card["config"]["already_hu"] == "auto"
    s = ds.series.set_index("series_id")
    assert sorted(s.index) == sorted(CTRATE_VOLUMES)
    for name, (intercept, _) in CTRATE_VOLUMES.items():
        assert_hu(ds.array(name), name)
        row = s.loc[name]
        assert row["hu_air_fraction"] > 0.5 and row["hu_body_fraction"] > 0.3
        if "fixed" in trees:  # the fixed copy is taken, and the table says so when there was a choice
            assert row["source_path"].startswith(f"dataset/{name.split('_')[0]}_fixed/")
            assert row["hu_stored_as"] == "HU" and pd.isna(row["hu_intercept"])
            assert "_fixed/: CT-RATE's *_fixed trees hold HU" in row["hu_reason"]
            assert row["hu_copy"].startswith("fixed copy dataset/") if len(trees) == 2 else row["hu_copy"] == ""
        else:
            assert row["hu_stored_as"] == "raw" and row["hu_intercept"] == intercept and row["hu_slope"] == 1.0
            assert "not a *_fixed tree" in row["hu_reason"] and f"RescaleIntercept {intercept:g} applied" in row["hu_reason"]


def test_explicit_rules_are_checked_against_the_data(tmp_path: Path) -> None:
    root = tmp_path / "ct"
    write_ctrate_repo(root, ("raw", "fixed"))
    # already_hu=no on both trees takes the raw copies (the files that rule describes): correct HU.
    no = prepare_dataset("ct-rate", root, tmp_path / "no", phantom_config(already_hu="no"))
    s = no.series.set_index("series_id")
    assert s["source_path"].str.startswith(("dataset/train/", "dataset/valid/")).all()
    assert s.loc["train_2_a_1", "hu_copy"].startswith("raw copy dataset/train/train_2/")
    for name in CTRATE_VOLUMES:
        assert_hu(no.array(name), name)
    # ... and refuses every fixed-only volume: the intercept applied to HU moves air to -2024 HU.
    fixed_only = tmp_path / "fixed"
    write_ctrate_repo(fixed_only, ("fixed",))
    with pytest.raises(InputError, match="nothing usable"):
        prepare_dataset("ct-rate", fixed_only, tmp_path / "no2", phantom_config(already_hu="no"))
    reasons = pd.read_csv(tmp_path / "no2" / "failures.csv")["reason"]
    assert len(reasons) == 5 and reasons.str.contains(r"not HU after the decided conversion \(already_hu=no").all()
    assert reasons.str.contains("0.0% in the body band").all()
    # already_hu=yes on raw files: air would sit at +24 or +7192 HU, refused.
    raw_only = tmp_path / "raw"
    write_ctrate_repo(raw_only, ("raw",))
    with pytest.raises(InputError, match="nothing usable"):
        prepare_dataset("ct-rate", raw_only, tmp_path / "yes", phantom_config(already_hu="yes"))
    assert pd.read_csv(tmp_path / "yes" / "failures.csv")["reason"].str.contains("0.0% of voxels in the air band").all()
    assert not (tmp_path / "yes" / "dataset.json").exists()


def test_disagreeing_evidence_is_refused_per_volume(tmp_path: Path) -> None:
    import nibabel as nib

    root = tmp_path / "ct"
    dataset = write_ctrate_repo(root, ("raw", "fixed"))
    # A raw file sitting in the fixed tree: the tree says HU, the data says otherwise.
    shutil.copyfile(dataset / "valid/valid_1/valid_1_a/valid_1_a_1.nii.gz", dataset / "valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz")
    # A raw-only volume whose metadata gives the wrong intercept (-1024 for a -8192 file).
    shutil.rmtree(dataset / "train_fixed/train_2")
    meta = pd.read_csv(dataset / "metadata/train_metadata.csv")
    meta.loc[meta["VolumeName"] == "train_2_a_1.nii.gz", "RescaleIntercept"] = -1024.0
    meta.to_csv(dataset / "metadata/train_metadata.csv", index=False)
    # Two files of one volume in the same tree: never pick one by walk order.
    extra = dataset / "train_fixed/elsewhere/train_1_a_2.nii.gz"
    extra.parent.mkdir()
    nib.save(nib.Nifti1Image(ctrate_hu("train_1_a_2").astype(np.int16), np.diag([1.5, 1.5, 3.0, 1.0])), extra)
    ds = prepare_dataset("ct-rate", root, tmp_path / "out", phantom_config())
    assert sorted(ds.series["series_id"]) == ["train_1_a_1", "valid_2_a_1"]
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert reasons["dataset/valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz"].startswith(
        "not HU after the decided conversion (file under valid_fixed/: CT-RATE's *_fixed trees hold HU): 0.0% of voxels in the air band")
    assert "RescaleIntercept -1024 applied): 0.0% of voxels in the air band" in reasons["dataset/train/train_2/train_2_a/train_2_a_1.nii.gz"]
    assert reasons["train_1_a_2.nii.gz"] == ("2 files of this volume in the fixed tree (dataset/train_fixed/elsewhere/train_1_a_2.nii.gz, "
                                             "dataset/train_fixed/train_1/train_1_a/train_1_a_2.nii.gz); remove all but one")


def test_flag_column_and_tree_must_agree(tmp_path: Path) -> None:
    root = tmp_path / "ct"
    dataset = write_ctrate_repo(root, ("fixed",))
    meta = pd.read_csv(dataset / "metadata/validation_metadata.csv")
    meta["StoredAsHU"] = [1, 0]
    meta.to_csv(dataset / "metadata/validation_metadata.csv", index=False)
    for rule in ("auto", "auto-column"):
        ds = prepare_dataset("ct-rate", root, tmp_path / rule, phantom_config(already_hu=rule))
        failures = ds.failures.set_index("path")["reason"]
        assert failures["valid_2_a_1.nii.gz"] == ("the evidence disagrees: the file is under valid_fixed/ (CT-RATE's fixed tree "
                                                  "holds HU) but the metadata CSV says StoredAsHU=0 (raw); refusing rather than guessing")
        s = ds.series.set_index("series_id")
        assert s.loc["valid_1_a_1", "hu_reason"] == "metadata StoredAsHU=1, file under valid_fixed/"
        if rule == "auto":  # train volumes have no flag (their CSV lacks the column) and go by the tree
            assert s.loc["train_1_a_1", "hu_reason"].startswith("file under train_fixed/")
        else:  # auto-column: without a flag a volume is refused
            assert list(s.index) == ["valid_1_a_1"]
            assert failures["train_1_a_1.nii.gz"] == "no StoredAsHU value in the metadata CSV (already_hu=auto-column needs one per volume)"


def test_auto_column_needs_the_column(tmp_path: Path) -> None:
    root = tmp_path / "ctrate"
    write_ctrate(root, stored_as_hu_column=False)
    with pytest.raises(ConfigError, match="auto-column"):
        prepare_dataset("ct-rate", root, tmp_path / "a", phantom_config(already_hu="auto-column"))
    assert not (tmp_path / "a").exists()


def test_listed_volume_without_file(tmp_path: Path) -> None:
    root = tmp_path / "ctrate"
    write_ctrate(root)
    next(root.rglob("train_3_a_1.nii.gz")).unlink()
    ds = prepare_dataset("ct-rate", root, tmp_path / "out", phantom_config(), limit=3)
    assert ds.failures.iloc[0].tolist() == ["train_3_a_1.nii.gz", "discover", "listed in the reports CSV but no such file"]
