"""The PHI filter: identity never reaches metadata; acquisition facts and descriptions do. Keyed pseudonyms
and their key; identity in file names."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

import pydicom
import pytest
from support.synthetic_dicom import PHI, write_series

from radlens.errors import ConfigError
from radlens.io.dicom import read_dicom_series
from radlens.io.phi import (
    PHI_KEY_ENV,
    PHI_KEY_FILE_ENV,
    PhiKey,
    default_key_file,
    identity_tokens,
    is_phi,
    load_phi_key,
    pseudonymise_uid,
    redact,
    safe_tags,
)
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


# --- keyed pseudonyms ---------------------------------------------------------------------------

KEY = "k" * 40


def test_keyed_pseudonyms_are_stable_per_key_and_differ_between_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PHI_KEY_ENV, KEY)
    key = load_phi_key()
    assert key.origin == f"${PHI_KEY_ENV}" and KEY not in repr(key)
    assert key.pseudonym("p", "MRN-1") == load_phi_key().pseudonym("p", "MRN-1") != key.pseudonym("p", "MRN-2")
    assert key.pseudonym("p", "MRN-1") == "p" + hmac.new(KEY.encode(), b"MRN-1", hashlib.sha256).hexdigest()[:16]
    other = PhiKey(b"x" * 40, "test")
    assert other.pseudonym("p", "MRN-1") != key.pseudonym("p", "MRN-1") and other.fingerprint != key.fingerprint
    assert KEY not in key.fingerprint and len(key.fingerprint) == 16
    # Without the key, trying every plausible PatientID does not find the pseudonym.
    target = key.pseudonym("p", "MRN-1")
    assert all(PhiKey(b"radlens".ljust(32, b"!"), "guess").pseudonym("p", f"MRN-{i}") != target for i in range(1000))


def test_a_key_is_created_once_private_and_outside_the_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(PHI_KEY_ENV, raising=False)
    monkeypatch.delenv(PHI_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert default_key_file() == tmp_path / "config" / "radlens" / "phi.key"
    key = load_phi_key()
    path = default_key_file()
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"created a new pseudonym key in {path}" in capsys.readouterr().err
    assert load_phi_key().fingerprint == key.fingerprint and "created" not in capsys.readouterr().err
    # An explicit key file wins; a key file inside an output folder is refused.
    mine = tmp_path / "mine.key"
    mine.write_text(KEY + "\n")
    mine.chmod(0o600)
    assert load_phi_key(mine).secret == KEY.encode()
    out = tmp_path / "out"
    (out / "keys").mkdir(parents=True)
    (out / "keys" / "phi.key").write_text(KEY)
    with pytest.raises(ConfigError, match="outside the output"):
        load_phi_key(out / "keys" / "phi.key", outputs=[out])
    monkeypatch.setenv(PHI_KEY_FILE_ENV, str(tmp_path / "elsewhere" / "k"))
    assert load_phi_key().fingerprint != key.fingerprint and (tmp_path / "elsewhere" / "k").is_file()


def test_bad_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(PHI_KEY_ENV, "radlens")
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_phi_key()
    with pytest.raises(ConfigError, match="no such pseudonym key file"):
        load_phi_key(tmp_path / "missing.key")
    shared = tmp_path / "shared.key"
    shared.write_text(KEY)
    shared.chmod(0o644)
    load_phi_key(shared)
    assert "can be read by other users" in capsys.readouterr().err


def test_identity_tokens_and_redaction() -> None:
    tokens = identity_tokens({"PatientName": "Doe^John^^Dr", "PatientID": "MRN-123", "StudyDate": "20240102",
                              "SeriesDescription": "t1_mprage"})
    assert tokens == {"doe", "john", "mrn123", "20240102"}  # "Dr" is too short to be told from ordinary names
    assert redact("DOE_JOHN_mrn-123_2024-01-02_t1_mprage", tokens) == "*_*_*_*_t1_mprage"
    assert redact("Johnson", {"john"}) == "*son"  # better one name too many than one too few
