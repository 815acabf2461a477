"""DICOM output of the MRI phantom: valid MR objects, geometry equal to the NIfTI, synthetic identity."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from support.sitk_reference import sitk_series_ras

from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom

CFG = MRIPhantomConfig(subjects=1, seed=11, series_per_subject=3, resolution=4, dicom=True,
                       sequences=("FLAIR", "MPRAGE", "T2STAR_GRE"))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("mri_dicom")
    return out, generate_mri_phantom(out, CFG)


def test_simpleitk_geometry_and_pixels_match_the_nifti(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    assert len(truth) == 3
    for row in truth.itertuples():
        from_dicom = sitk_series_ras(out / row.dicom_dir)
        from_nifti = nib.as_closest_canonical(nib.load(out / row.file))
        np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-3)
        np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))


def test_dicom_files_are_valid_mr_objects_with_the_sidecar_values(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    for row in truth.itertuples():
        files = sorted((out / row.dicom_dir).glob("*.dcm"))
        stored = nib.load(out / row.file)
        assert len(files) == stored.shape[row.slice_axis]
        sidecar = json.loads((out / row.file.replace(".nii.gz", ".json")).read_text())
        ds = pydicom.dcmread(files[0])
        assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.MRImageStorage == ds.SOPClassUID
        assert ds.Modality == "MR"
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        first = np.take(np.asarray(stored.dataobj), 0, axis=row.slice_axis).T
        np.testing.assert_array_equal(ds.pixel_array, first)
        for key in ("EchoTime", "RepetitionTime", "InversionTime"):
            assert (key in ds) == (key in sidecar)
            if key in sidecar:
                assert float(ds[key].value) == pytest.approx(sidecar[key] * 1000.0)
        if "FlipAngle" in sidecar:
            assert float(ds.FlipAngle) == sidecar["FlipAngle"]
        if "Manufacturer" in sidecar:
            assert ds.Manufacturer == sidecar["Manufacturer"]
        if "ManufacturersModelName" in sidecar:
            assert ds.ManufacturerModelName == sidecar["ManufacturersModelName"]
        assert ("SliceThickness" in ds) == ("SliceThickness" in sidecar)
        if "SliceThickness" in sidecar:
            assert float(ds.SliceThickness) == pytest.approx(row.SliceThickness)
        assert len({pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}) == len(files)


def test_patient_identity_is_obviously_synthetic(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    ds = pydicom.dcmread(next((out / truth["dicom_dir"].iloc[0]).glob("*.dcm")))
    assert str(ds.PatientName) == "PHANTOM^SUBJECT001"
    assert ds.PatientID == "PHANTOM-001"
    assert ds.PatientBirthDate == "19000101"
    assert ds.InstitutionName.startswith("RADLENS PHANTOM")


def test_geometry_round_trips_for_every_stored_order_and_slice_axis(tmp_path: Path) -> None:
    from radlens.phantoms.mri_acquisition import random_orientation, reorient
    from radlens.phantoms.mri_dicom import write_dicom_series

    rng = np.random.default_rng(0)
    ras = rng.integers(0, 1000, size=(5, 6, 7)).astype(np.int16)
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-30.0, 12.5, 40.0]
    sidecar = {"EchoTime": 0.01, "RepetitionTime": 0.5, "SeriesNumber": 1}
    for case in range(9):
        ornt = random_orientation(rng, case % 3, any_axis=case > 5)
        stored, stored_affine = reorient(ras, affine, ornt)
        folder = tmp_path / f"series-{case}"
        write_dicom_series(folder, stored, stored_affine, int(ornt[case % 3, 0]), sidecar, "sub-007", f"case{case}")
        from_dicom = sitk_series_ras(folder)
        np.testing.assert_allclose(from_dicom.affine, affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), ras)


def test_radlens_readers_agree_and_filter_the_synthetic_identity(phantom: tuple[Path, pd.DataFrame]) -> None:
    dicom = pytest.importorskip("radlens.io.dicom")
    nifti = pytest.importorskip("radlens.io.nifti")
    out, truth = phantom
    for row in truth.itertuples():
        from_dicom = dicom.read_dicom_series(out / row.dicom_dir)
        from_nifti = nifti.read_nifti(out / row.file)
        np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-3)
        np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
        assert from_dicom.metadata.EchoTime == pytest.approx(from_nifti.metadata.EchoTime)
        kept = json.dumps({**from_dicom.metadata.to_dict(), **dict(from_dicom.metadata.extra)}, default=str)
        assert "PHANTOM^SUBJECT" not in kept and "19000101" not in kept and "PHANTOM-001" not in kept
