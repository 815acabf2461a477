"""The PHI filter: identity never reaches metadata; acquisition facts and descriptions do."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from support.synthetic_dicom import PHI, write_series

from radlens.io.dicom import read_dicom_series
from radlens.io.phi import is_phi, pseudonymise_uid, safe_tags
from radlens.io.sidecar import read_sidecar


def test_synthetic_series_metadata_holds_no_phi(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s", series_uid="1.2.826.0.1.5")
    meta = read_dicom_series(tmp_path / "s").metadata
    text = repr(meta) + json.dumps(dict(meta.extra))
    for key, value in PHI.items():
        assert key not in meta.extra
        assert str(value) not in text
    assert "1.2.826.0.1.5" not in text
    assert meta.extra["SeriesInstanceUID"] == pseudonymise_uid("1.2.826.0.1.5")
    assert meta.SeriesDescription == "t2_tse_tra" and meta.Manufacturer == "SIEMENS"
    tags = safe_tags(pydicom.dcmread(files[0], stop_before_pixels=True))
    assert not set(PHI) & set(tags) and tags["Modality"] == "MR" and tags["EchoTime"] == 85


def test_allow_phi_keeps_identity(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s")
    tags = safe_tags(pydicom.dcmread(files[0], stop_before_pixels=True), allow_phi=True)
    assert tags["PatientName"] == "Doe^John" and tags["AccessionNumber"] == "ACC998877"


def test_sidecar_phi_is_filtered(tmp_path: Path) -> None:
    side = {
        "Modality": "MR",
        "PatientName": "Doe^John",
        "PatientID": "MRN-1",
        "PatientBirthDate": "1970-01-01",
        "AcquisitionDateTime": "2024-01-02T10:11:12",
        "AcquisitionTime": "10:11:12.5",
        "InstitutionName": "Springfield General",
        "DeviceSerialNumber": "4242",
        "ImageComments": "John Doe",
        "StudyInstanceUID": "1.2.3",
        "SeriesDescription": "t1_mprage",
        "ConversionSoftware": "dcm2niix",
        "EchoTime": 0.003,
        "PatientSex": "M",
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(side))
    meta = read_sidecar(path)
    assert set(meta.extra) == {"ConversionSoftware", "StudyInstanceUID", "PatientSex"}
    assert meta.extra["StudyInstanceUID"] == pseudonymise_uid("1.2.3")
    assert meta.SeriesDescription == "t1_mprage" and meta.EchoTime == 0.003


def test_rules_keep_acquisition_times_and_drop_clock_times() -> None:
    assert not any(is_phi(k) for k in ("EchoTime", "RepetitionTime", "InversionTime", "StudyDescription", "PatientPosition"))
    assert all(is_phi(k) for k in ("SeriesTime", "ContentDate", "OperatorsName", "PatientAge", "OtherPatientIDs", "StudyID"))
    assert pseudonymise_uid("1.2.3") == pseudonymise_uid(" 1.2.3 ") != pseudonymise_uid("1.2.4")
    assert safe_tags({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"})["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.4"
