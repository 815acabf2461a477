"""``radlens info``: a scan's geometry and PHI-free metadata, a prepared dataset's card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from support.layouts import write_bids  # noqa: E402

from radlens.cli import main  # noqa: E402
from radlens.info import describe  # noqa: E402
from radlens.prepare.pipeline import default_config, prepare_dataset  # noqa: E402


def test_dicom_scan_info_is_phi_free(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", get_testdata_file("CT_small.dcm"), "--json", "true"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["shape"] == [128, 128, 1] and data["modality"] == "CT" and data["orientation"] == "RAS"
    assert data["plane"] == "axial" and data["hu"] is True
    for identity in ("1CT1", "CompressedSamples", "PatientName", "PatientBirthDate"):
        assert identity not in out


def test_nifti_and_dataset_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_bids(tmp_path / "bids", subjects=1)
    info = describe(paths[0])
    assert info["spacing"] == [2.0, 2.0, 3.0] and info["metadata"]["EchoTime"] == 0.003
    prepare_dataset("bids", tmp_path / "bids", tmp_path / "out", default_config("bids"))
    assert main(["info", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "kind: prepared dataset" in text and "series: 2 (2 protocol labels, 1.0 series per label)" in text
    assert describe(tmp_path / "out")["counts"]["protocol_labels"] == 2
    assert main(["info", str(tmp_path / "nothing")]) == 2
