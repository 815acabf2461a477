"""BIDS discovery: ids from the sub-/ses- entities, sidecars as inputs, files without a subject."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from support.layouts import head

from radlens.prepare.importers.bids import default_config, discover


def test_ids_from_entities(tmp_path: Path) -> None:
    for rel in ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-b/anat/sub-02_ses-b_T2w.nii", "extra/scan.nii.gz"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(head((4, 4, 2), 0), np.eye(4)), path)
    (tmp_path / "sub-01/anat/sub-01_T1w.json").write_text(json.dumps({"EchoTime": 0.01}))
    found = discover(tmp_path, default_config())
    items = {i.series_id: i for i in found.items}
    assert set(items) == {"sub-01_T1w", "sub-02_ses-b_T2w"}
    assert (items["sub-01_T1w"].patient_id, items["sub-01_T1w"].study_id) == ("sub-01", "sub-01_ses-1")
    assert (items["sub-02_ses-b_T2w"].patient_id, items["sub-02_ses-b_T2w"].study_id) == ("sub-02", "sub-02_ses-b")
    assert len(items["sub-01_T1w"].inputs) == 2  # NIfTI + sidecar make the fingerprint
    assert [f.path for f in found.failures] == ["extra/scan.nii.gz"]


def test_contrast_from_the_bids_suffix(tmp_path: Path) -> None:
    from radlens.prepare.importers.bids import bids_contrast

    assert [bids_contrast(s) for s in ("sub-01_T1w", "sub-01_ses-2_run-01_T2starw", "sub-01_acq-x_FLAIR")] == [
        "T1w", "T2*w", "FLAIR"]
    assert bids_contrast("sub-01_run-1") is None and bids_contrast("scan") is None  # no suffix


def test_prepare_writes_the_contrast_column(tmp_path: Path) -> None:
    import dataclasses

    from support.layouts import write_bids

    from radlens.prepare.pipeline import prepare_dataset
    from radlens.prepare.slicing import SliceConfig

    write_bids(tmp_path / "bids", subjects=1)
    star = tmp_path / "bids/sub-00/ses-01/anat/sub-00_ses-01_T2starw"
    nib.save(nib.Nifti1Image(head((12, 12, 4), 5), np.diag([2.0, 2.0, 3.0, 1.0])), f"{star}.nii.gz")
    Path(f"{star}.json").write_text(json.dumps({"EchoTime": 0.02, "RepetitionTime": 0.6, "FlipAngle": 20}))
    cfg = dataclasses.replace(default_config(), slicing=SliceConfig(slice_shape=(12, 12)))
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "out", cfg)
    contrast = ds.series.set_index("series_id")["contrast"].to_dict()
    assert contrast == {"sub-00_ses-01_T1w": "T1w", "sub-00_ses-01_T2w": "T2w", "sub-00_ses-01_T2starw": "T2*w"}
    assert "contrast" not in ds.slices.columns  # a series property; slices join it through series_id
