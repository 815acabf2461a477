"""MRI phantom tissue label maps: one per series on its image's grid, named by dseg.tsv, made from the image's anatomy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from radlens.io.prepared import PreparedDataset
from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom
from radlens.phantoms.mri_labels import LESION, TISSUE_LABELS
from radlens.prepare.masks import read_label_table
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig

# T1 (2D spin echo and 3D MPRAGE) and T2 series in every subject, lesions in every subject.
CFG = MRIPhantomConfig(subjects=3, seed=2, series_per_subject=3, resolution=4, lesion_probability=1.0,
                       sequences=("T1_SE", "T2_FSE", "MPRAGE"))
CSF, GM, WM = 1, 2, 3


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("mri")
    return out, generate_mri_phantom(out, CFG)


def _means(image: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    return {k: float(image[labels == k].mean()) for k in TISSUE_LABELS if (labels == k).any()}


def test_every_series_has_a_label_map_on_its_own_grid(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    assert read_label_table(out / "dseg.tsv") == TISSUE_LABELS
    assert set(truth["contrast"]) == {"T1w", "T2w"} and set(truth["plane"]) > {"axial"}
    for row in truth.itertuples():
        image, seg = nib.load(out / row.file), nib.load(out / row.tissue_map)
        assert row.tissue_map == row.file.replace(".nii.gz", "_dseg.nii.gz")
        assert seg.shape == image.shape and np.array_equal(seg.affine, image.affine)
        labels = np.asarray(seg.dataobj)
        assert seg.get_data_dtype() == np.uint8 and set(np.unique(labels)) <= set(TISSUE_LABELS)
        assert {CSF, GM, WM} <= set(np.unique(labels))
        # The lesion label is the series' lesion mask, voxel for voxel.
        lesion = np.asarray(nib.load(out / row.lesion_mask).dataobj)
        np.testing.assert_array_equal(labels == LESION, lesion > 0)
        # The labels mark the tissues the signal came from: T1 WM > GM > CSF, T2 the reverse; brain brighter than air.
        means = _means(np.asarray(image.dataobj, np.float64), labels)
        order = [WM, GM, CSF] if row.contrast == "T1w" else [CSF, GM, WM]
        assert means[order[0]] > means[order[1]] > means[order[2]], (row.series, means)
        assert min(means[CSF], means[GM], means[WM]) > means[0]


def test_a_tissue_sits_at_the_same_world_position_in_every_series(phantom: tuple[Path, pd.DataFrame]) -> None:
    out, truth = phantom
    for _, series in truth.groupby("subject"):
        centres = []
        for row in series.itertuples():
            seg = nib.load(out / row.tissue_map)
            voxels = np.argwhere(np.asarray(seg.dataobj) == WM)
            centres.append(nib.affines.apply_affine(seg.affine, voxels).mean(axis=0))
        assert np.all(np.ptp(np.array(centres), axis=0) < 4.0)  # mm, whatever the plane and stored order


def test_prepare_bids_takes_the_label_maps_as_masks(phantom: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, truth = phantom
    cfg = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(32, 32)))
    ds = prepare_dataset("bids", out, tmp_path / "prepared", cfg)
    assert ds.failures.empty and ds.labels == TISSUE_LABELS
    slices = ds.slices
    assert slices is not None and (slices["mask_path"] != "").all()
    for row in ds.series.itertuples():
        stack, masks = np.asarray(ds.array(row.series_id)), np.asarray(ds.mask(row.series_id))
        assert masks.shape == stack.shape and set(np.unique(masks)) <= set(TISSUE_LABELS)
        means = _means(stack, masks)  # prepared intensities in [0, 1], masks through the same steps
        order = [WM, GM, CSF] if row.contrast == "T1w" else [CSF, GM, WM]
        assert means[order[0]] > means[order[1]] > means[order[2]], (row.series_id, means)
    # The slices' lesion flag follows the lesion label, not the tissues around it.
    lesion = slices["labels_present"].map(lambda p: LESION in p)
    assert lesion.any() and not lesion.all()
    assert (slices.loc[lesion, "lesion"] == 1).all()  # (a lesion can vanish when a slice is fitted to 32 x 32)
    assert slices["lesion"].sum() < (slices["labels_present"].map(len) > 0).sum()


def test_a_label_map_off_its_image_grid_is_a_failure_naming_it(phantom: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, truth = phantom
    root = tmp_path / "raw"
    rows = truth[truth["subject"] == "sub-001"]
    for row in rows.itertuples():  # one subject, copied, its label maps spoilt two ways
        for rel in (row.file, row.file.replace(".nii.gz", ".json"), row.tissue_map):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes((out / rel).read_bytes())
    (root / "dseg.tsv").write_bytes((out / "dseg.tsv").read_bytes())
    first, second = rows["tissue_map"].iloc[0], rows["tissue_map"].iloc[1]
    seg = nib.load(root / first)
    shifted = seg.affine.copy()
    shifted[:3, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj), shifted), root / first)
    seg = nib.load(root / second)
    nib.save(nib.Nifti1Image(np.where(np.asarray(seg.dataobj) == 4, 9, np.asarray(seg.dataobj)).astype(np.uint8),
                             seg.affine), root / second)
    ds = prepare_dataset("bids", root, tmp_path / "prepared", dataclasses.replace(default_config("bids"), dims=3))
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert reasons[rows["file"].iloc[0]].startswith(f"{Path(first).name}: label map affine differs from")
    assert reasons[rows["file"].iloc[1]].startswith(f"{Path(second).name}: label ids [9] are not in its label table")
    assert list(PreparedDataset(ds.path).series["series_id"]) == [rows["series"].iloc[2]]


def test_tissue_maps_can_be_switched_off(tmp_path: Path) -> None:
    truth = generate_mri_phantom(tmp_path, dataclasses.replace(CFG, subjects=1, series_per_subject=1, tissue_maps=False))
    assert not (tmp_path / "dseg.tsv").exists() and not list(tmp_path.rglob("*_dseg.nii.gz"))
    assert truth["tissue_map"].fillna("").eq("").all()
