"""Sidecar metadata: dcm2niix JSON and DICOM tags give the same record; bad sidecars are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.synthetic_dicom import MR_SIDECAR, write_series

from radlens.errors import InputError
from radlens.io.dicom import read_dicom_series
from radlens.io.sidecar import metadata_from_mapping, read_sidecar, sidecar_path


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_sidecar_and_dicom_give_the_same_record(tmp_path: Path) -> None:
    from_json = read_sidecar(_write(tmp_path / "t2.json", MR_SIDECAR))
    write_series(tmp_path / "dicom")
    from_dicom = read_dicom_series(tmp_path / "dicom").metadata
    assert from_json.to_dict() == from_dicom.to_dict()
    assert from_json.EchoTime == 0.085 and from_json.ScanningSequence == ("SE", "IR")


def test_list_valued_codes_and_missing_keys() -> None:
    meta = metadata_from_mapping({"SequenceVariant": ["SK", "SP", "MP"], "ScanningSequence": "GR", "EchoTime": "0.0025"})
    assert meta.SequenceVariant == ("SK", "SP", "MP") and meta.ScanningSequence == ("GR",)
    assert meta.EchoTime == 0.0025
    assert meta.RepetitionTime is None and meta.Manufacturer is None and meta.InversionTime is None


def test_dicom_times_in_milliseconds_are_converted() -> None:
    meta = metadata_from_mapping({"EchoTime": 30, "RepetitionTime": 2000, "InversionTime": 900, "FlipAngle": 90}, time_unit="ms")
    assert (meta.EchoTime, meta.RepetitionTime, meta.InversionTime, meta.FlipAngle) == (0.03, 2.0, 0.9, 90.0)


@pytest.mark.parametrize("field, value", [("EchoTime", "long"), ("RepetitionTime", [1, 2]), ("FlipAngle", True), ("InversionTime", "nan")])
def test_non_numeric_parameters_are_named(tmp_path: Path, field: str, value: object) -> None:
    path = _write(tmp_path / "bad.json", {field: value})
    with pytest.raises(InputError, match=f"bad.json: {field} is not a") as err:
        read_sidecar(path)
    assert repr(value) in str(err.value)


def test_malformed_and_non_object_json(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"EchoTime": 0.1,')
    with pytest.raises(InputError, match="broken.json: malformed JSON"):
        read_sidecar(broken)
    with pytest.raises(InputError, match="JSON object"):
        read_sidecar(_write(tmp_path / "list.json", [1, 2]))


def test_sidecar_path_uses_the_full_stem() -> None:
    assert sidecar_path("/d/sub-01_T1w.nii.gz") == Path("/d/sub-01_T1w.json")
    assert sidecar_path("/d/a.b.nii") == Path("/d/a.b.json")


def test_millisecond_times_convert_to_the_same_seconds_as_a_sidecar() -> None:
    from radlens.io.sidecar import metadata_from_mapping

    dicom = metadata_from_mapping({"EchoTime": "9.35", "RepetitionTime": "2300"}, time_unit="ms")
    sidecar = metadata_from_mapping({"EchoTime": 0.00935, "RepetitionTime": 2.3}, time_unit="s")
    assert dicom.EchoTime == sidecar.EchoTime == 0.00935
    assert dicom.RepetitionTime == sidecar.RepetitionTime


def test_sidecar_times_in_milliseconds_are_converted_and_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING, logger="radlens.io.sidecar"):
        meta = read_sidecar(_write(tmp_path / "ms.json", {"EchoTime": 90, "RepetitionTime": 6000, "InversionTime": 2500}))
    assert (meta.EchoTime, meta.RepetitionTime, meta.InversionTime) == (0.09, 6.0, 2.5)
    assert meta.extra["time_units"] == (
        "milliseconds, converted to seconds: EchoTime 90, RepetitionTime 6000, InversionTime 2500 cannot be seconds "
        "(longest: EchoTime 1 s, RepetitionTime 100 s, InversionTime 10 s)"
    )
    assert "ms.json: times in milliseconds" in caplog.text
    # A gradient echo in ms: only the echo time gives the unit away; both are converted.
    gre = read_sidecar(_write(tmp_path / "gre.json", {"EchoTime": 4.5, "RepetitionTime": 25}))
    assert (gre.EchoTime, gre.RepetitionTime) == (0.0045, 0.025) and "time_units" in gre.extra
    assert "time_units" not in read_sidecar(_write(tmp_path / "s.json", MR_SIDECAR)).extra


def test_sidecar_times_reach_the_volume_through_read_nifti(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from radlens.io.nifti import read_nifti

    img = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4))
    nib.save(img, tmp_path / "sub-01_T2w.nii.gz")
    _write(tmp_path / "sub-01_T2w.json", {"Modality": "MR", "EchoTime": 90, "RepetitionTime": 6000})
    meta = read_nifti(tmp_path / "sub-01_T2w.nii.gz").metadata
    assert (meta.EchoTime, meta.RepetitionTime) == (0.09, 6.0) and meta.extra["time_units"].startswith("milliseconds")


@pytest.mark.parametrize(
    "times, reason",
    [
        ({"EchoTime": -0.01, "RepetitionTime": 2.0}, "negative time: EchoTime -0.01"),
        ({"EchoTime": 0.09, "RepetitionTime": 6000}, "EchoTime 0.09 and RepetitionTime 6000 cannot both be ms"),  # mixed
        ({"EchoTime": 90, "RepetitionTime": 6.0}, "EchoTime 90 and RepetitionTime 6 cannot both be ms"),  # mixed
        ({"EchoTime": 0.2, "RepetitionTime": 0.1}, "EchoTime 0.2 and RepetitionTime 0.1 cannot both be s"),
        ({"RepetitionTime": 200_000}, r"impossible time: RepetitionTime 200000 s or ms \(longest: RepetitionTime 100 s\)"),
    ],
)
def test_impossible_or_inconsistent_times_are_refused(tmp_path: Path, times: dict, reason: str) -> None:
    path = _write(tmp_path / "bad.json", times)
    with pytest.raises(InputError, match=reason) as err:
        read_sidecar(path)
    assert err.value.path == str(path)


def test_dicom_times_are_checked_too() -> None:
    with pytest.raises(InputError, match="negative time: RepetitionTime -5"):
        metadata_from_mapping({"EchoTime": 30, "RepetitionTime": -5}, time_unit="ms", source="x.dcm")
    with pytest.raises(InputError, match=r"impossible time: EchoTime 90000 ms"):
        metadata_from_mapping({"EchoTime": 90000}, time_unit="ms", source="x.dcm")
