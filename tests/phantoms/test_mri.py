"""End-to-end MRI phantom: files, truth table, geometry, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from radlens.errors import ConfigError, InputError
from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom

TINY = MRIPhantomConfig(subjects=2, seed=3, series_per_subject=4, resolution=4, lesion_probability=1.0,
                        dicom=True, preview=True)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("mri")
    return out, generate_mri_phantom(out, TINY)


def test_writes_bids_like_tree_with_truth_lesions_and_preview(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    assert len(truth) == TINY.subjects * TINY.series_per_subject
    assert sorted(truth["subject"].unique()) == ["sub-001", "sub-002"]
    on_disk = pd.read_csv(out / "truth.csv")
    assert list(on_disk["file"]) == list(truth["file"])
    for row in truth.itertuples():
        image = out / row.file
        assert image.parent == out / row.subject / "ses-01" / "anat"
        assert image.with_name(image.name.replace(".nii.gz", ".json")).exists()
        assert (out / row.lesion_mask).name == image.name.replace(".nii.gz", "_desc-lesion_mask.nii.gz")
        assert row.contrast in {"T1w", "T2w", "PDw", "FLAIR", "T2*w", "STIR"}
    assert (out / "preview.png").stat().st_size > 10_000
    card = json.loads((out / "phantom.json").read_text())
    assert card["seed"] == TINY.seed and card["config"]["resolution"] == 4


def test_truth_agrees_with_sidecars_and_images(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    table = pd.read_csv(out / "truth.csv")
    table[["missing_fields", "SeriesDescription"]] = table[["missing_fields", "SeriesDescription"]].fillna("")
    for row in table.to_dict("records"):
        sidecar = json.loads((out / row["file"].replace(".nii.gz", ".json")).read_text())
        missing = [k for k in row["missing_fields"].split(";") if k]
        assert not any(k in sidecar for k in missing)
        for key in ("EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength",
                    "ManufacturersModelName", "SliceThickness", "MRAcquisitionType"):
            if key in sidecar:
                assert sidecar[key] == row[key], key
            elif key not in missing:
                assert key == "InversionTime" and pd.isna(row[key])
        if "SeriesDescription" in sidecar:
            assert sidecar["SeriesDescription"] == row["SeriesDescription"]
        if "Manufacturer" in sidecar:
            assert sidecar["Manufacturer"] == row["ManufacturerWritten"]
        image = nib.load(out / row["file"])
        assert "x".join(map(str, image.shape)) == row["shape"]
        assert "".join(nib.aff2axcodes(image.affine)) == row["orientation"]
        assert np.linalg.norm(image.affine[:3, row["slice_axis"]]) == pytest.approx(row["SliceThickness"])
        assert image.get_data_dtype() == np.int16


def test_lesion_table_flags_the_stored_slices_with_lesion(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    table = pd.read_csv(out / "lesions.csv")
    assert table["lesion"].sum() > 0
    for row in truth.itertuples():
        mask = np.asarray(nib.load(out / row.lesion_mask).dataobj)
        assert mask.shape == nib.load(out / row.file).shape
        flags = table[table["file"] == row.file].sort_values("slice_index")
        expected = np.moveaxis(mask, row.slice_axis, 0).reshape(mask.shape[row.slice_axis], -1).any(axis=1)
        np.testing.assert_array_equal(flags["lesion"].to_numpy(), expected.astype(int))
        assert int(mask.sum()) == row.lesion_voxels


def test_a_lesion_sits_at_the_same_world_position_in_every_stored_order(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    for _, series in truth[truth["lesion_voxels"] > 0].groupby("subject"):
        centres = []
        for row in series.itertuples():
            mask = nib.load(out / row.lesion_mask)
            voxels = np.argwhere(np.asarray(mask.dataobj) > 0)
            centres.append(nib.affines.apply_affine(mask.affine, voxels).mean(axis=0))
        assert len(series["orientation"].unique()) > 1 or len(series) == 1
        spread = np.ptp(np.array(centres), axis=0)
        assert np.all(spread < 8.0), spread  # thick slices shift a partial-volume centroid by a few mm at most


def test_subjects_differ_in_anatomy(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    masks = []
    for _, series in truth.groupby("subject"):
        path = out / series["file"].iloc[0]
        image = nib.as_closest_canonical(nib.load(path))
        head = np.argwhere(np.asarray(image.dataobj) > 0.2 * np.percentile(np.asarray(image.dataobj), 99))
        masks.append(nib.affines.apply_affine(image.affine, head).std(axis=0))
    assert not np.allclose(masks[0], masks[1], rtol=0.01)


def test_same_seed_gives_same_bytes_whatever_the_workers(phantom: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, truth = phantom
    again = generate_mri_phantom(tmp_path, TINY, workers=2)
    pd.testing.assert_frame_equal(again, truth)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.suffix != ".png")
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".png")
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    other = generate_mri_phantom(tmp_path / "other", MRIPhantomConfig(**{**TINY.__dict__, "seed": 4, "dicom": False,
                                                                            "preview": False}))
    first = np.asarray(nib.load(out / truth["file"].iloc[0]).dataobj)
    assert other["EchoTime"].tolist() != truth["EchoTime"].tolist() or not np.array_equal(
        first, np.asarray(nib.load(tmp_path / "other" / other["file"].iloc[0]).dataobj))


def test_bad_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown MRI sequences"):
        generate_mri_phantom(tmp_path, MRIPhantomConfig(sequences=("DWI",)))
    with pytest.raises(ConfigError):
        generate_mri_phantom(tmp_path, MRIPhantomConfig(lesion_probability=1.5))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="must be a folder"):
        generate_mri_phantom(tmp_path / "file", MRIPhantomConfig(subjects=1))


def test_cli_writes_a_phantom_without_lesions(tmp_path: Path) -> None:
    from radlens.cli import main

    code = main(["phantom", "mri", str(tmp_path), "--subjects", "1", "--seed", "7", "--phantom.resolution", "4",
                 "--phantom.series_per_subject", "2", "--phantom.lesion_probability", "0"])
    assert code == 0
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert len(truth) == 2 and (truth["lesion_count"] == 0).all()
    assert not (tmp_path / "lesions.csv").exists()
    assert json.loads((tmp_path / "phantom.json").read_text())["seed"] == 7
    assert main(["phantom", "mri", str(tmp_path / "x"), "--phantom.sequences", "[DWI]"]) == 2
