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
