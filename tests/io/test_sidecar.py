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
