"""NIfTI reading/writing against nibabel's own test images and hand-made bad files."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from radlens.errors import InputError
from radlens.io.nifti import read_mask, read_nifti, write_nifti


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii", "standard.nii.gz", "functional.nii", "example_nifti2.nii.gz"])
def test_matches_nibabel_canonical(name: str) -> None:
    path = os.path.join(data_path, name)
    stored = nib.load(path)
    canonical = nib.as_closest_canonical(stored)
    volume = read_nifti(path)
    spatial = canonical.shape[:3]
    channels = int(np.prod(canonical.shape[3:], dtype=int))
    assert volume.array.shape == (channels, *spatial)
    np.testing.assert_allclose(volume.affine, canonical.affine)
    expected = np.asarray(canonical.dataobj, dtype=np.float32).reshape(*spatial, channels)
    np.testing.assert_array_equal(np.moveaxis(volume.array, 0, -1), expected)
    assert volume.orientation == "RAS"
    column = stored.affine[:3, 2]
    np.testing.assert_allclose(volume.slice_normal, column / np.linalg.norm(column))


def test_header_scaling_is_recorded() -> None:
    scaled = read_nifti(os.path.join(data_path, "functional.nii"))
    plain = read_nifti(os.path.join(data_path, "anatomical.nii"))
    assert scaled.metadata.extra["header_scaling"]["applied"] is True
    assert scaled.metadata.extra["header_scaling"]["slope"] == pytest.approx(0.0754, rel=1e-3)
    assert plain.metadata.extra["header_scaling"] == {"slope": 1.0, "intercept": 0.0, "applied": False}


def _save(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def test_lps_file_is_reoriented_and_2d_gets_a_slice_axis(tmp_path: Path) -> None:
    lps = np.diag([-1.0, -2.0, 3.0, 1.0])
    data = np.arange(1, 25, dtype=np.int16).reshape(2, 3, 4)
    volume = read_nifti(_save(data, tmp_path / "lps.nii.gz", lps))
    np.testing.assert_array_equal(volume.array[0], data[::-1, ::-1, :])
    np.testing.assert_allclose(volume.spacing, (1, 2, 3))
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1], lps @ [1, 2, 0, 1])
    flat = read_nifti(_save(np.ones((5, 4), np.float32), tmp_path / "flat.nii"))
    assert flat.array.shape == (1, 5, 4, 1)


def test_stored_integers_are_kept_unless_the_header_scales(tmp_path: Path) -> None:
    anatomical = read_nifti(os.path.join(data_path, "anatomical.nii"))  # big-endian int16, no scaling
    assert anatomical.array.dtype == np.int16 and anatomical.array.dtype.isnative
    assert read_nifti(os.path.join(data_path, "standard.nii.gz")).array.dtype == np.uint8
    assert read_nifti(os.path.join(data_path, "functional.nii")).array.dtype == np.float32  # scl_slope set
    assert read_nifti(_save(np.ones((2, 2, 2)), tmp_path / "f64.nii")).array.dtype == np.float32
    labels = np.zeros((4, 3, 2), np.uint8)
    labels[0, 0, 0] = 2
    mask = read_mask(_save(labels, tmp_path / "mask.nii.gz", np.diag([-1.0, 1.0, 1.0, 1.0])))
    assert mask.array.dtype == np.uint8 and mask.array[0, -1, 0, 0] == 2
    assert read_mask(_save(np.zeros((2, 2, 2), np.uint8), tmp_path / "empty.nii")).array.max() == 0


def test_lps_int16_ct_is_read_with_one_copy_into_a_torch_ready_array(tmp_path: Path) -> None:
    import torch

    data = np.random.default_rng(0).integers(-1024, 2000, (64, 64, 48), dtype=np.int16)
    path = _save(data, tmp_path / "ct.nii.gz", np.diag([-0.7, -0.7, 1.25, 1.0]))  # LPS, like DICOM
    read_nifti(path)  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        volume = read_nifti(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert volume.array.dtype == np.int16 and volume.orientation == "RAS"
    np.testing.assert_array_equal(torch.from_numpy(volume.array)[0].numpy(), data[::-1, ::-1, :])
    # Decompressed stored array plus one reoriented copy (~2.3x); float32 + a C-contiguous copy was 4x.
    assert peak < 3.0 * data.nbytes


def test_sidecar_metadata_is_attached_without_phi(tmp_path: Path) -> None:
    path = _save(np.ones((2, 2, 2), np.float32), tmp_path / "sub-01_T2w.nii.gz")
    side = {"Modality": "MR", "EchoTime": 0.09, "PatientName": "Doe^John", "AcquisitionTime": "10:11:12"}
    (tmp_path / "sub-01_T2w.json").write_text(json.dumps(side))
    volume = read_nifti(path)
    assert volume.metadata.EchoTime == 0.09 and volume.modality == "MR" and not volume.hu
    assert "Doe^John" not in repr(volume.metadata) and "AcquisitionTime" not in volume.metadata.extra


def test_sidecar_dicom_orientation_keeps_the_plane_of_a_reoriented_file(tmp_path: Path) -> None:
    from radlens.prepare.slicing import acquisition_plane

    # A sagittal acquisition (slices along X) saved by a tool in canonical RAS order: the stored
    # third axis is now Z and alone would read as axial.
    sagittal = nib.Nifti1Image(np.random.default_rng(0).random((8, 16, 12)).astype(np.float32), np.diag([4.0, 1, 1, 1]))
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(sagittal.dataobj).transpose(1, 2, 0),
                                                         sagittal.affine[:, [1, 2, 0, 3]]))
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(canonical, path)
    assert acquisition_plane(read_nifti(path).slice_normal) == "axial"
    path.with_suffix("").with_suffix(".json").write_text(json.dumps(
        {"ImageOrientationPatientDICOM": [0, 1, 0, 0, 0, -1], "EchoTime": 0.01}))
    assert acquisition_plane(read_nifti(path).slice_normal) == "sagittal"
    path.with_suffix("").with_suffix(".json").write_text(json.dumps({"ImageOrientationPatientDICOM": [1, 0, 0]}))
    with pytest.raises(InputError, match="ImageOrientationPatientDICOM must be 6 numbers"):
        read_nifti(path)


def test_truncated_nan_and_empty_files_are_refused(tmp_path: Path) -> None:
    good = _save(np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated.nii.gz: cannot read as NIfTI"):
        read_nifti(truncated)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(InputError, match="garbage.nii.gz"):
        read_nifti(garbage)
    data = np.ones((3, 3, 3), np.float32)
    data[0, 0, :2] = [np.nan, np.inf]
    with pytest.raises(InputError, match="2 of 27 voxels are NaN or infinite"):
        read_nifti(_save(data, tmp_path / "nan.nii"))
    with pytest.raises(InputError, match="zeros.nii: every voxel is zero"):
        read_nifti(_save(np.zeros((3, 3, 3), np.float32), tmp_path / "zeros.nii"))
    with pytest.raises(InputError, match="does not exist"):
        read_nifti(tmp_path / "missing.nii.gz")


def test_write_round_trip_is_atomic(tmp_path: Path) -> None:
    volume = read_nifti(os.path.join(data_path, "example4d.nii.gz"))
    out = write_nifti(volume, tmp_path / "copy.nii.gz", sidecar=True)
    again = read_nifti(out)
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "copy.nii.gz"]
    with pytest.raises(InputError, match="must end in .nii"):
        write_nifti(volume, tmp_path / "copy.nrrd")


def _patch_header(path: Path, **fields: object) -> Path:
    """Rewrite header fields of a saved NIfTI-1 file in place, as a damaged or careless writer
    leaves them: nibabel's own writer would check or fix them."""
    compressed = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    header = nib.Nifti1Header(binaryblock=bytes(raw[:348]), check=False)
    for name, value in fields.items():
        header[name] = value
    raw[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(raw), mtime=0) if compressed else bytes(raw))
    return path


def _small(path: Path, dtype: type = np.int16) -> Path:
    img = nib.Nifti1Image(np.arange(1, 4 * 5 * 6 + 1).reshape(4, 5, 6).astype(dtype), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.set_qform(img.affine, code=1)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_huge_declared_volume_in_a_tiny_file_is_refused_before_allocating(tmp_path: Path, name: str) -> None:
    import time

    path = _patch_header(_small(tmp_path / name), dim=[3, 2048, 2048, 1024, 1, 1, 1, 1])  # 8.6 GB of int16
    assert path.stat().st_size < 1500
    start = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"{name}: the header declares 8,589,934,944 bytes .*2048, 2048, 1024"):
            read_nifti(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000 and time.perf_counter() - start < 2.0


def test_a_declared_size_within_the_file_but_over_the_sane_maximum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import radlens.io.build

    path = _small(tmp_path / "big.nii")
    monkeypatch.setattr(radlens.io.build, "MAX_VOXELS", 100)
    with pytest.raises(InputError, match=r"declares 120 voxels \(shape \[4, 5, 6\]\), more than radlens reads"):
        read_nifti(path)


def test_a_header_without_qform_and_sform_is_refused_not_guessed(tmp_path: Path) -> None:
    path = _patch_header(_small(tmp_path / "nocodes.nii.gz"), qform_code=0, sform_code=0)
    assert nib.load(path).affine[0, 0] == -2  # nibabel would fall back to an Analyze-style, flipped affine
    with pytest.raises(InputError, match="nocodes.nii.gz: no valid qform or sform .*orientation cannot be determined"):
        read_nifti(path)
    # An out-of-range code is no code: nibabel resets it to 0.
    with pytest.raises(InputError, match="qform_code 9, sform_code 0"):
        read_nifti(_patch_header(_small(tmp_path / "badcode.nii"), qform_code=9, sform_code=0))
    only_qform = read_nifti(_patch_header(_small(tmp_path / "qform.nii"), sform_code=0))
    np.testing.assert_allclose(only_qform.spacing, (2, 3, 4))


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), float("inf")])
def test_a_voxel_size_that_is_not_positive_is_refused_not_made_1_mm(tmp_path: Path, bad: float) -> None:
    path = _patch_header(_small(tmp_path / "pixdim.nii"), pixdim=[1.0, bad, 3.0, 4.0, 1, 1, 1, 1])
    with pytest.raises(InputError, match=r"pixdim.nii: voxel size pixdim\[1:4\] = \[.*\] mm: each must be a positive number"):
        read_nifti(path)


@pytest.mark.parametrize("dtype, reason", [(np.complex64, "complex voxels"), (np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]), "not a grey value")])
def test_complex_and_colour_voxels_are_refused(tmp_path: Path, dtype: object, reason: str) -> None:
    path = tmp_path / "odd.nii"
    data = np.ones((3, 3, 3), dtype=dtype) if np.dtype(dtype).kind == "c" else np.zeros((3, 3, 3), dtype=dtype)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(InputError, match=f"odd.nii: .*{reason}"):
        read_nifti(path)


def test_nibabel_header_errors_become_input_errors(tmp_path: Path) -> None:
    low_offset = _patch_header(_small(tmp_path / "offset.nii"), vox_offset=0)  # nibabel reads the header as voxels
    with pytest.raises(InputError, match="offset.nii: vox_offset 0: the voxel data cannot start inside the header"):
        read_nifti(low_offset)
    magic = _patch_header(_small(tmp_path / "magic.nii.gz"), magic=b"zz\x00\x00")  # nibabel: ImageFileError
    with pytest.raises(InputError, match="magic.nii.gz: cannot read as NIfTI"):
        read_nifti(magic)
    aligned = np.diag([1e4, 1e4, 1e4, 1.0])
    aligned[:2, 1] = [1e4, 1e-12]  # voxel axes 0 and 1 both along x; not singular, but no orientation (OrientationError)
    skewed = _small(tmp_path / "skewed.nii")
    header = nib.load(skewed).header
    header.set_sform(aligned, code=1)
    _patch_header(skewed, **{f"srow_{a}": header[f"srow_{a}"] for a in "xyz"})
    with pytest.raises(InputError, match="skewed.nii: the voxel-to-world affine has no clear orientation"):
        read_nifti(skewed)
    tiny = _patch_header(_small(tmp_path / "tiny.nii"), srow_x=[1e-9, 0, 0, 0], sform_code=1)
    with pytest.raises(InputError, match=r"tiny.nii: voxel spacing \[1e-09, 3.0, 4.0\] mm is outside"):
        read_nifti(tiny)


def test_metre_and_micron_units_are_scaled_to_millimetres_and_recorded(tmp_path: Path) -> None:
    metres = _small(tmp_path / "metres.nii")
    img = nib.load(metres)
    img = nib.Nifti1Image(np.array(img.dataobj), img.affine / np.array([1000, 1000, 1000, 1])[:, None])
    img.header.set_xyzt_units("meter")
    nib.save(img, metres)
    volume = read_nifti(metres)
    np.testing.assert_allclose(volume.spacing, (2, 3, 4))
    assert volume.metadata.extra["spatial_unit"] == "metre (xyzt_units): the affine was scaled by 1000 to millimetres"
    assert "spatial_unit" not in read_nifti(_small(tmp_path / "mm.nii")).metadata.extra
