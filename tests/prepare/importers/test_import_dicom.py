"""DICOM tree import: series grouping, pseudonymous ids, PHI-free tables, bad files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from support.layouts import tree_state, write_dicom_tree

from radlens.io.phi import load_phi_key
from radlens.prepare.importers.dicom import pseudonym
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig
from radlens.prepare.spatial import SpatialConfig


def test_dicom_tree_to_volumes(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    write_dicom_tree(root, mr="MR_truncated.dcm")
    before = tree_state(root)
    cfg = dataclasses.replace(default_config("dicom"), spatial=SpatialConfig(shape=(32, 32, 4)))
    ds = prepare_dataset("dicom", root, tmp_path / "out", cfg)
    assert tree_state(root) == before
    series = ds.series
    # The CT series (4 files) becomes one volume; the truncated MR file is skipped.
    patient = pseudonym("p", "1CT1", load_phi_key())  # the key tests/conftest.py sets
    # The patient's own folder is recorded as its pseudonym.
    assert len(series) == 1 and series["modality"].iat[0] == "CT" and series["source_path"].iat[0] == f"{patient}/ct"
    assert series["orig_shape"].iat[0].tolist() == [128, 128, 4] and ds.array(series["series_id"].iat[0]).shape == (1, 32, 32, 4)
    assert series["patient_id"].iat[0] == patient and ds.card["pseudonym_key_fingerprint"] == load_phi_key().fingerprint
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert "not a DICOM" in reasons["notes.txt"]
    mr = [path for path in reasons if path.endswith("/mr.dcm")]
    assert mr == [f"{pseudonym('p', '4MR1', load_phi_key())}/mr.dcm"] and "truncated" in reasons[mr[0]].lower()
    # No DICOM identity anywhere in what was written.
    written = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".npy")
    for identity in (b"1CT1", b"CompressedSamples^CT1", b"4MR1"):
        assert identity not in written
    assert any("pseudonym" in note for note in ds.card["notes"])


def test_dicom_slices_with_metadata_captions(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    write_dicom_tree(root)
    cfg = dataclasses.replace(default_config("dicom"), dims=2, slicing=SliceConfig(slice_shape=(16, 16)))
    ds = prepare_dataset("dicom", root, tmp_path / "out", cfg, strict=False)
    assert set(ds.series["modality"]) == {"CT", "MR"} and ds.card["modality"] == "mixed"
    mr = ds.series[ds.series["modality"] == "MR"].iloc[0]
    assert mr["n_slices"] == 1 and "(0.24, 4, NONE, 90)" in mr["text"]  # TE/TR from the tags (ms) in seconds
    assert (ds.series["label"] >= 0).all() and len(ds.card["label_names"]) == 2
