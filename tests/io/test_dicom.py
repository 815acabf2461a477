"""DICOM series reading: geometry against SimpleITK, slice order, HU, multi-frame, bad input."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from support.bad_files import patch_dicom_element
from support.sitk_reference import sitk_series_ras
from support.synthetic_dicom import rotation, slice_positions, voxel_values, write_enhanced, write_series

from radlens.errors import InputError
from radlens.io.dicom import find_series, read_dicom_series

OBLIQUE = tuple(rotation(20, 15)[:, 0]) + tuple(rotation(20, 15)[:, 1])
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "coronal": (1, 0, 0, 0, 0, -1),
    "oblique": OBLIQUE,
}


def sitk_ras(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's reading of a series, reoriented to RAS+ like radlens: (array XYZ, affine)."""
    image = sitk_series_ras(folder)
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize("plane", sorted(ORIENTATIONS))
def test_geometry_matches_simpleitk(tmp_path: Path, plane: str) -> None:
    write_series(tmp_path / plane, iop=ORIENTATIONS[plane])
    volume = read_dicom_series(tmp_path / plane)
    expected_array, expected_affine = sitk_ras(tmp_path / plane)
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array[0], expected_array)
    assert volume.orientation == "RAS"
    assert volume.metadata.extra["geometry"] == []


def test_slices_ordered_by_position_not_instance_number(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s", gaps=(2.5,) * 5, seed=3)
    volume = read_dicom_series(list(reversed(files)))
    # axial LPS series: RAS reorientation flips X and Y, Z (superior) stays in slice order
    expected = voxel_values(6, 7, 6).transpose(2, 1, 0)[::-1, ::-1, :]
    np.testing.assert_array_equal(volume.array[0], expected)
    np.testing.assert_allclose(volume.spacing, (0.6, 0.8, 2.5))
    np.testing.assert_allclose(volume.slice_normal, (0, 0, 1), atol=1e-12)


def test_slice_normal_is_acquisition_normal_in_ras(tmp_path: Path) -> None:
    write_series(tmp_path / "sag", iop=ORIENTATIONS["sagittal"])
    volume = read_dicom_series(tmp_path / "sag")
    # row (0,1,0) x column (0,0,-1) = (-1,0,0) in LPS, i.e. towards the patient's right: +x in RAS
    np.testing.assert_allclose(volume.slice_normal, (1, 0, 0), atol=1e-12)


def test_enhanced_multiframe_equals_classic_series(tmp_path: Path) -> None:
    classic = read_dicom_series(write_series(tmp_path / "classic", iop=OBLIQUE))
    enhanced = read_dicom_series(write_enhanced(tmp_path / "enhanced.dcm", iop=OBLIQUE))
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-9)
    np.testing.assert_array_equal(enhanced.array, classic.array)
    assert enhanced.metadata.to_dict() == classic.metadata.to_dict()


def assert_voxels_at_scanner_positions(volume, positions: np.ndarray, iop, pixel_spacing) -> None:
    """Every voxel (decoded from its value) sits where its file's geometry puts it."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    index = np.argwhere(np.ones(volume.shape, bool))
    value = volume.array[0][tuple(index.T)].astype(int) - 1
    k, r, c = value // 1000, (value % 1000) // 30, (value % 1000) % 30
    lps = positions[k] + c[:, None] * row * pixel_spacing[1] + r[:, None] * col * pixel_spacing[0]
    ras = lps * np.array([-1.0, -1.0, 1.0])
    world = (volume.affine @ np.c_[index, np.ones(len(index))].T).T[:, :3]
    np.testing.assert_allclose(world, ras, atol=1e-5)


@pytest.mark.parametrize("plane", sorted(ORIENTATIONS))
def test_voxels_sit_at_their_scanner_positions(tmp_path: Path, plane: str) -> None:
    iop = ORIENTATIONS[plane]
    write_series(tmp_path / plane, iop=iop, gaps=(1.5, 1.5, 1.5))
    volume = read_dicom_series(tmp_path / plane)
    assert_voxels_at_scanner_positions(volume, slice_positions((-20.0, 15.0, 40.0), iop, (1.5,) * 3), iop, (0.8, 0.6))


def test_gantry_tilt_is_reported_and_geometry_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_series(tmp_path / "tilt", gaps=(2.0, 2.0, 2.0), shift=(0, 0.5, 0), modality="CT", rescale=(1, -1024))
    with caplog.at_level(logging.WARNING, logger="radlens.io.dicom"):
        volume = read_dicom_series(tmp_path / "tilt")
    assert any("gantry tilt 14.04 deg" in w for w in volume.metadata.extra["geometry"])
    assert "gantry tilt" in caplog.text
    positions = slice_positions((-20.0, 15.0, 40.0), (1, 0, 0, 0, 1, 0), (2.0,) * 3, (0, 0.5, 0))
    shifted = volume.array - np.float32(-1024)  # undo the rescale to decode voxel values
    assert_voxels_at_scanner_positions(dataclasses.replace(volume, array=shifted), positions, (1, 0, 0, 0, 1, 0), (0.8, 0.6))
    np.testing.assert_allclose(volume.slice_normal, (0, 0, 1), atol=1e-12)


def test_a_missing_slice_is_refused_with_the_gap_named(tmp_path: Path) -> None:
    files = write_series(tmp_path / "gap", gaps=(2.0, 2.0, 4.0, 2.0))  # slices at 40, 42, 44, 48, 50 mm
    by_z = {float(pydicom.dcmread(f).ImagePositionPatient[2]): f.name for f in files}
    with pytest.raises(InputError, match="slices are not evenly spaced") as err:
        read_dicom_series(tmp_path / "gap")
    message = str(err.value)
    assert f"4 mm between {by_z[44.0]} (44 mm) and {by_z[48.0]} (48 mm)" in message and "median gap 2 mm" in message
    assert "up to 1 mm from where they were acquired" in message and str(tmp_path / "gap") in message
    # Each evenly spaced run of files still reads as a series of its own.
    assert read_dicom_series([tmp_path / "gap" / by_z[z] for z in (40.0, 42.0, 44.0)]).spacing[2] == pytest.approx(2.0)


def test_a_small_spacing_irregularity_is_read_and_reported(tmp_path: Path) -> None:
    write_series(tmp_path / "jitter", gaps=(2.0, 2.0, 2.03, 2.0))  # rounding-level: slices within 0.02 mm of the grid
    volume = read_dicom_series(tmp_path / "jitter")
    assert volume.metadata.extra["geometry"] == ["irregular slice spacing: 2 to 2.03 mm (median 2 mm)"]
    assert volume.shape[2] == 5


ROWS, COLUMNS, IMAGE_POSITION, PIXEL_SPACING, RESCALE_SLOPE = (
    (0x0028, 0x0010), (0x0028, 0x0011), (0x0020, 0x0032), (0x0028, 0x0030), (0x0028, 0x1053)
)


@pytest.mark.parametrize(
    "patches, reason",
    [
        ([(IMAGE_POSITION, {"vr": b"C["})], "unreadable DICOM file .*NotImplementedError"),  # unknown VR
        ([(ROWS, {"value": b"\x06\x00\x00"})], "unreadable DICOM file .*BytesLengthException"),  # odd-length US
        ([(ROWS, {"value": b"\x40\x9c"}), (COLUMNS, {"value": b"\x40\x9c"})],  # checked before allocating
         "Rows x Columns = 40000 x 40000: more pixels per frame"),
        ([(ROWS, {"value": b"\x40\x9c"})], "cannot decode pixel data .*less than expected"),
        ([(ROWS, {"value": b"\x00\x00"})], "Rows must be 1 positive numbers"),
        ([(IMAGE_POSITION, {"value": b"1\\2 "})], "ImagePositionPatient must be 3 finite numbers"),
        ([(PIXEL_SPACING, {"value": b"0\\0.6 "})], "PixelSpacing must be 2 positive numbers"),
        ([(PIXEL_SPACING, {"value": b"0.8\\abc "})], "PixelSpacing must be 2 numbers"),
        ([(RESCALE_SLOPE, {"value": b"0 "})], "RescaleSlope is 0"),
    ],
)
def test_damaged_tags_are_one_input_error_naming_the_file(tmp_path: Path, patches: list, reason: str) -> None:
    path = write_series(tmp_path / "s", gaps=(), rescale=(1.0, 0.0))[0]
    for tag, change in patches:
        patch_dicom_element(path, *tag, **change)
    with pytest.raises(InputError, match=reason) as err:
        read_dicom_series(path)
    assert err.value.path == str(path)


def test_a_folder_with_a_damaged_file_is_refused_not_read_without_it(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s")
    original = files[2].read_bytes()
    patch_dicom_element(files[2], *ROWS, value=b"\x06\x00\x00")  # its header cannot be parsed: which series?
    (tmp_path / "s" / "notes.txt").write_text("not an image")  # not DICOM at all: skipped as before
    with pytest.raises(InputError, match=f"{files[2].name}: unreadable DICOM file .*the series may be incomplete"):
        read_dicom_series(tmp_path / "s")
    # A file whose header groups it with the series but whose other tags are damaged fails the read.
    files[2].write_bytes(original)
    patch_dicom_element(files[3], *IMAGE_POSITION, vr=b"C[")
    with pytest.raises(InputError, match=f"{files[3].name}: unreadable DICOM file .*NotImplementedError"):
        read_dicom_series(tmp_path / "s")


def test_orientation_and_frame_count_are_checked(tmp_path: Path) -> None:
    files = write_series(tmp_path / "zero", gaps=(2.0,))
    for path in files:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [0, 0, 0, 0, 1, 0]
        ds.save_as(path)
    with pytest.raises(InputError, match="is not two unit vectors"):
        read_dicom_series(tmp_path / "zero")
    enhanced = write_enhanced(tmp_path / "enhanced.dcm")
    ds = pydicom.dcmread(enhanced)
    ds.NumberOfFrames = 1000
    ds.save_as(enhanced)
    with pytest.raises(InputError, match="NumberOfFrames is 1000 but there are 5 per-frame functional groups"):
        read_dicom_series(enhanced)


def test_ct_small_in_hounsfield_units() -> None:
    volume = read_dicom_series(get_testdata_file("CT_small.dcm"))
    assert volume.hu and volume.modality == "CT"
    assert volume.array.shape == (1, 128, 128, 1)
    assert -1100 < volume.array.min() < -500 and 0 < volume.array.max() < 3100  # air .. bone, not raw 0..4095
    assert volume.metadata.RescaleIntercept == -1024
    assert volume.metadata.extra["geometry"] == ["single slice: through-plane spacing 5 mm taken from SpacingBetweenSlices"]


def test_mr_small_metadata_in_seconds() -> None:
    volume = read_dicom_series(get_testdata_file("MR_small.dcm"))
    assert not volume.hu and volume.modality == "MR"
    meta = volume.metadata
    assert meta.EchoTime == pytest.approx(0.24) and meta.RepetitionTime == pytest.approx(4.0)
    assert meta.ScanningSequence == ("SE",) and meta.FlipAngle == 90


def test_truncated_dicom_is_a_clear_error() -> None:
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(InputError, match="truncated") as err:
        read_dicom_series(path)
    assert err.value.path == path


def test_find_series_groups_and_reports_skipped(tmp_path: Path) -> None:
    a = write_series(tmp_path / "study" / "a")
    b = write_series(tmp_path / "study" / "b" / "deeper", gaps=(3.0,))
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    series, skipped = find_series(tmp_path / "study")
    assert sorted(len(v) for v in series.values()) == [len(b), len(a)]
    assert skipped == [(tmp_path / "study" / "notes.txt", "not a DICOM file")]


def test_folder_with_several_series_needs_a_choice(tmp_path: Path) -> None:
    from radlens.io.phi import pseudonymise_uid

    write_series(tmp_path / "mixed", series_uid="1.2.3.4")
    write_series(tmp_path / "mixed" / "sub", series_uid="1.2.3.9", gaps=(1.0, 1.0))
    with pytest.raises(InputError, match="holds 2 series; choose one") as err:
        read_dicom_series(tmp_path / "mixed")
    assert "1.2.3.9" not in str(err.value) and pseudonymise_uid("1.2.3.9") in str(err.value)
    assert read_dicom_series(tmp_path / "mixed", series_uid="1.2.3.9").shape[2] == 3
    assert read_dicom_series(tmp_path / "mixed", series_uid=pseudonymise_uid("1.2.3.4")).shape[2] == 5
    with pytest.raises(InputError, match="no series 9.9 found"):
        read_dicom_series(tmp_path / "mixed", series_uid="9.9")


def test_files_from_two_series_are_refused(tmp_path: Path) -> None:
    a = write_series(tmp_path / "a")
    b = write_series(tmp_path / "b")
    with pytest.raises(InputError, match="2 different series"):
        read_dicom_series([a[0], b[0]])


def test_duplicate_positions_and_non_dicom_are_refused(tmp_path: Path) -> None:
    files = write_series(tmp_path / "dup", gaps=(2.0, 2.0))
    copy = tmp_path / "dup" / "copy.dcm"
    copy.write_bytes(files[0].read_bytes())
    with pytest.raises(InputError, match="share a position"):
        read_dicom_series(tmp_path / "dup")
    text = tmp_path / "x.dcm"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a DICOM file"):
        read_dicom_series(text)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM image series"):
        read_dicom_series(tmp_path / "empty")


def test_single_slice_series_reads_with_warning(tmp_path: Path) -> None:
    write_series(tmp_path / "one", gaps=())
    volume = read_dicom_series(tmp_path / "one")
    assert volume.shape[2] == 1
    assert volume.spacing[2] == pytest.approx(2.5)
    assert "single slice" in volume.metadata.extra["geometry"][0]
