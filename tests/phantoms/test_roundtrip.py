"""The phantoms go through `radlens prepare bids|dicom|ct-rate` unchanged, and what they know survives.

Each phantom is generated once (tiny grids) and prepared with the importers' own defaults except
for smaller shapes; the tests then hold the prepared tables and arrays against the phantom's
truth: sidecar TE/TR in the captions, lesion masks in ``slices.parquet`` and as label maps in
``masks/`` (MRI lesions 2D and 3D, CT findings 3D and 2D), no PHI from the DICOM headers, DICOM
and NIfTI versions of a series agreeing, the CT labels CSV in ``series.parquet``, and HU handled
per volume as the metadata CSV's ``StoredAsHU`` flag says.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from radlens.io.nifti import read_mask
from radlens.io.prepared import PreparedDataset, parse_boxes
from radlens.phantoms.ct import CTPhantomConfig, generate_ct_phantom, plan_patients, render_patient
from radlens.phantoms.ct_anatomy import TISSUES
from radlens.phantoms.ct_findings import FINDINGS
from radlens.phantoms.ct_layout import decode
from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom
from radlens.phantoms.mri_labels import LESION, TISSUE_LABELS
from radlens.prepare.masks import label_boxes
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig
from radlens.prepare.spatial import SpatialConfig, center_crop_pad, reorient_ras

# Seed 4 gives 2D and 3D series in all three planes, lesions in every subject and a sidecar without
# EchoTime. Stored orders are scanner-like here; files reoriented by a tool are tested on their own.
MRI = MRIPhantomConfig(subjects=2, seed=4, series_per_subject=4, resolution=4, lesion_probability=1.0,
                       any_axis_rate=0.0, dicom=True)
# Seed 0 gives raw and already-HU volumes, both scanner intercepts, two reconstructions of a scan
# and a second scan of a patient.
CT = CTPhantomConfig(patients=4, seed=0, shape=(48, 48, 32), spacing=(7.0, 7.0, 8.0), already_hu_fraction=0.5)
CT_SHAPE = (48, 48, 36)  # the phantom's grid, padded by 2 slices at each end
PHI = ("PHANTOM", "19000101", "20000101")  # name/id/accession/institution, birth date, study date
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclasses.dataclass
class MRIRun:
    root: Path
    truth: pd.DataFrame
    bids2d: PreparedDataset
    bids3d: PreparedDataset
    dicom3d: PreparedDataset


@pytest.fixture(scope="module")
def mri(tmp_path_factory: pytest.TempPathFactory) -> MRIRun:
    root = tmp_path_factory.mktemp("mri")
    truth = generate_mri_phantom(root, MRI)
    prepared = tmp_path_factory.mktemp("prepared")
    slices = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(32, 32)))
    volumes = dataclasses.replace(default_config("dicom"), spatial=SpatialConfig(shape=(32, 32, 32)))
    return MRIRun(
        root, truth,
        bids2d=prepare_dataset("bids", root, prepared / "bids2d", slices),
        bids3d=prepare_dataset("bids", root, prepared / "bids3d", volumes),
        dicom3d=prepare_dataset("dicom", root / "dicom", prepared / "dicom3d", volumes),
    )


@dataclasses.dataclass
class CTRun:
    root: Path
    truth: pd.DataFrame
    ds: PreparedDataset


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> CTRun:
    root = tmp_path_factory.mktemp("ct")
    truth = generate_ct_phantom(root, CT)
    base = default_config("ct-rate")
    cfg = dataclasses.replace(base, spatial=dataclasses.replace(base.spatial, target_spacing=None, shape=CT_SHAPE))
    return CTRun(root, truth, prepare_dataset("ct-rate", root, tmp_path_factory.mktemp("prepared") / "ct", cfg))


def _imaging_parameters(caption: str) -> list[str]:
    """The (TE, TR, TI, FA) tuple at the end of an MR-CLIP caption, as written."""
    match = re.search(r"Imaging Parameters \([^)]*\): \(([^)]*)\)$", caption)
    assert match is not None, caption
    return match.group(1).split(", ")


def _complete(ds: PreparedDataset, expected: int) -> None:
    assert len(ds.series) == expected and ds.series["series_id"].is_unique
    assert ds.failures.empty and ds.card["counts"]["failures"] == 0


def test_bids_prepares_every_series_with_the_sidecar_te_tr_in_its_caption(mri: MRIRun) -> None:
    ds = mri.bids2d
    _complete(ds, len(mri.truth))
    series = ds.series.set_index("series_id")
    assert set(series.index) == set(mri.truth["series"])
    seen = {"written": 0, "missing": 0}
    for row in mri.truth.itertuples():
        sidecar = json.loads((mri.root / row.file.replace(".nii.gz", ".json")).read_text())
        prepared = series.loc[row.series]
        assert prepared["plane"] == row.plane and prepared["patient_id"] == row.subject
        assert ds.array(row.series).shape[1:] == (32, 32)
        written = dict(zip(("EchoTime", "RepetitionTime"), _imaging_parameters(prepared["text"])))
        for key, text in written.items():
            if key in sidecar:
                assert prepared[key] == pytest.approx(sidecar[key])
                assert float(text) == pytest.approx(sidecar[key], abs=5e-5)
                seen["written"] += 1
            else:
                assert text == "NONE" and pd.isna(prepared[key])
                seen["missing"] += 1
    assert seen["written"] > 0 and seen["missing"] > 0  # the phantom drops EchoTime from one sidecar


def test_lesion_masks_mark_the_slices_the_phantom_lists(mri: MRIRun) -> None:
    lesions = pd.read_csv(mri.root / "lesions.csv")
    slices = mri.bids2d.slices
    assert slices is not None and set(slices["lesion"]) == {0, 1}
    for row in mri.truth.itertuples():
        stored = nib.load(mri.root / row.file)
        ras_axis, flip = nib.io_orientation(stored.affine)[row.slice_axis]
        assert ras_axis == PLANE_AXIS[row.plane]
        n = stored.shape[row.slice_axis]
        listed = lesions[lesions["file"] == row.file]
        expected = dict(zip(listed["slice_index"] if flip > 0 else n - 1 - listed["slice_index"], listed["lesion"]))
        kept = slices[slices["series_id"] == row.series]
        assert len(kept) > 0 and (kept["plane"] == row.plane).all()
        assert dict(zip(kept["slice_index"], kept["lesion"])) == {i: expected[i] for i in kept["slice_index"]}


def _private_dir(dicom_dir: str) -> str:
    """``dicom/sub-001/series-01`` as the DICOM source records it: the subject folder as the patient's pseudonym."""
    from radlens.io.phi import load_phi_key
    from radlens.phantoms.mri_dicom import patient_identity

    subject, rest = dicom_dir.removeprefix("dicom/").split("/", 1)
    return f"{load_phi_key().pseudonym('p', patient_identity(subject)['PatientID'])}/{rest}"


def _written_text(folder: Path) -> str:
    """Every table, card, record and log the prepared folder holds, as text (arrays excluded)."""
    parts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".npy"):
        parts.append(pd.read_parquet(path).to_csv() if path.suffix == ".parquet" else path.read_text())
    return "\n".join(parts)


def test_dicom_prepares_every_series_and_keeps_no_phi(mri: MRIRun) -> None:
    ds = mri.dicom3d
    _complete(ds, len(mri.truth))
    # Source paths relative to the root, the subject's folder recorded as its pseudonym (keyed: tests/conftest.py's key).
    assert set(ds.series["source_path"]) == {_private_dir(d) for d in mri.truth["dicom_dir"]}
    assert ds.series["patient_id"].str.fullmatch(r"p[0-9a-f]{16}").all()
    assert ds.series["series_id"].str.fullmatch(r"s[0-9a-f]{16}").all()
    subject_folder = ds.series["source_path"].str.split("/").str[0]
    assert (subject_folder == ds.series["patient_id"]).all()  # one pseudonym per subject
    assert ds.series["patient_id"].nunique() == MRI.subjects
    text = _written_text(ds.path)
    assert all(caption in text for caption in ds.series["text"])  # the tables were read
    for value in PHI:
        assert value not in text


def test_dicom_and_nifti_versions_of_a_series_agree(mri: MRIRun) -> None:
    nifti = mri.bids3d.series.set_index("series_id")
    dicom = mri.dicom3d.series.set_index("source_path")
    for row in mri.truth.itertuples():
        a, b = nifti.loc[row.series], dicom.loc[_private_dir(row.dicom_dir)]
        assert a["plane"] == b["plane"] == row.plane
        assert a["text"] == b["text"]
        assert list(a["orig_shape"]) == list(b["orig_shape"])
        np.testing.assert_allclose(a["orig_spacing"], b["orig_spacing"], rtol=1e-5)
        from_nifti, from_dicom = mri.bids3d.array(row.series), mri.dicom3d.array(b["series_id"])
        assert from_nifti.shape == from_dicom.shape == (1, 32, 32, 32)
        np.testing.assert_allclose(from_dicom, from_nifti, atol=1e-4)


def _labels_csv(root: Path) -> pd.DataFrame:
    """Both labels CSVs of the phantom, indexed by volume name without ``.nii.gz``."""
    frame = pd.concat([pd.read_csv(root / f"{part}_predicted_labels.csv") for part in ("train", "valid")])
    frame.index = frame.pop("VolumeName").str.removesuffix(".nii.gz")
    return frame


def test_ct_labels_csv_round_trips_into_the_finding_columns(ct: CTRun) -> None:
    ds = ct.ds
    _complete(ds, len(ct.truth))
    assert ds.card["findings"] == list(FINDINGS)
    labels = _labels_csv(ct.root)
    series = ds.series.set_index("series_id")
    assert sorted(series.index) == sorted(labels.index)
    pd.testing.assert_frame_equal(series.loc[labels.index, list(FINDINGS)].astype(int), labels[list(FINDINGS)],
                                  check_names=False)
    assert labels.to_numpy().sum() > 0  # some findings are present


def test_ct_hu_follows_the_stored_as_hu_flag_of_each_volume(ct: CTRun) -> None:
    ds = ct.ds
    assert ds.card["config"]["already_hu"] == "auto"  # the StoredAsHU column decides per volume, checked on the data
    truth = ct.truth.set_index(ct.truth["VolumeName"].str.removesuffix(".nii.gz"))
    assert set(truth["StoredAsHU"]) == {True, False}
    assert set(truth.loc[~truth["StoredAsHU"], "RescaleIntercept"]) == {-1024.0, -8192.0}
    tissues = {vol.name: vol.tissue for task in plan_patients(CT) for vol in render_patient(CT, task)}
    for name, row in truth.iterrows():
        stored = np.asarray(nib.load(ct.root / row["path"]).dataobj)
        hu = decode(stored, row["RescaleSlope"], row["RescaleIntercept"], bool(row["StoredAsHU"]))
        prepared = ds.array(str(name))[0]
        assert prepared.shape == CT_SHAPE
        np.testing.assert_array_equal(prepared[:, :, :2], -1.0)  # padding: -1000 HU, the window's bottom
        np.testing.assert_allclose(prepared[:, :, 2:-2], np.clip(hu, -1000, 1000) / 1000, atol=1e-6)
        inner, tissue = prepared[:, :, 2:-2], tissues[name]
        air, lung, muscle = (inner[tissue == TISSUES[t]] for t in ("air", "lung", "muscle"))
        assert np.median(air) == pytest.approx(-1.0, abs=0.02)
        # Muscle is ~45 HU, lungs ~-855 HU (7 mm voxels blur both); a wrong rescale lands near -1 or +1.
        assert -1.0 < np.median(lung) < -0.5 < -0.1 < np.median(muscle) < 0.2


def test_ct_ids_scans_and_splits_follow_ct_rate(ct: CTRun) -> None:
    series = ct.ds.series.set_index("series_id")
    truth = ct.truth.set_index(ct.truth["VolumeName"].str.removesuffix(".nii.gz"))
    for name, row in series.iterrows():
        split, patient, scan, _ = str(name).split("_")
        assert row["patient_id"] == f"{split}_{patient}" == truth.loc[name, "patient_id"]
        assert row["scan_id"] == f"{split}_{patient}_{scan}" == truth.loc[name, "scan_id"]
        assert row["source_split"] == split
    recons = truth.groupby("scan_id").size()
    assert (recons > 1).any() and truth.groupby("patient_id")["scan_id"].nunique().max() > 1
    for scan, names in truth.groupby("scan_id").groups.items():
        assert set(series.loc[list(names), "scan_id"]) == {scan}
    assert series.groupby("patient_id")["split"].nunique().eq(1).all()
    assert (series.loc[series["source_split"] == "valid", "split"] == "test").all()
    assert (series.loc[series["source_split"] == "train", "split"] != "test").all()
    assert set(series["source_split"]) == {"train", "valid"}


def test_reoriented_niftis_keep_their_plane_through_the_sidecar_orientation(tmp_path: Path) -> None:
    # Every series stored with its slice axis anywhere, as after a reorienting tool: the plane comes
    # from the sidecar's ImageOrientationPatientDICOM, as dcm2niix writes it.
    cfg = MRIPhantomConfig(subjects=2, seed=1, series_per_subject=3, resolution=4, any_axis_rate=1.0)
    truth = generate_mri_phantom(tmp_path / "raw", cfg)
    assert (truth["slice_axis"] != 2).any()  # some files no longer store the slice axis last
    ds = prepare_dataset("bids", tmp_path / "raw", tmp_path / "prepared",
                         dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(32, 32))))
    planes = ds.series.set_index("series_id")["plane"]
    assert all(planes[row.series] == row.plane for row in truth.itertuples())


def test_mri_lesion_masks_arrive_beside_2d_slices_and_3d_volumes(mri: MRIRun) -> None:
    for ds in (mri.bids2d, mri.bids3d):
        assert ds.labels == TISSUE_LABELS  # the tissue map (_dseg) wins over the lesion mask; its lesion label is LESION
        for row in ds.series.itertuples():
            mask, array = ds.mask(row.series_id), ds.array(row.series_id)
            assert mask is not None and mask.shape == array.shape and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= set(TISSUE_LABELS)
            boxes = label_boxes(mask[0] if ds.dims == 3 else mask)
            assert {k: tuple(v) for k, v in boxes.items()} == parse_boxes(row.boxes)
    # 3D (crop/pad to 32^3, no resampling): the mask is the phantom's, in RAS order, cut like the image.
    lesions = 0
    for row in mri.truth.itertuples():
        source = reorient_ras(read_mask(mri.root / row.lesion_mask))
        expected = center_crop_pad(source, (32, 32, 32)).array
        np.testing.assert_array_equal(mri.bids3d.mask(row.series) == LESION, expected.astype(bool))
        lesions += int(expected.any())
    assert lesions > 0
    # 2D: a slice whose stored mask shows the lesion is a lesion slice of the phantom.
    slices = mri.bids2d.slices
    shown = slices["labels_present"].map(lambda p: LESION in p)
    assert shown.any() and (slices.loc[shown, "lesion"] == 1).all()
    for row in slices[shown].head(20).itertuples():
        assert (mri.bids2d.slice_mask(row.slice_id) == LESION).any()


def test_ct_finding_masks_arrive_in_3d_and_2d(ct: CTRun, tmp_path: Path) -> None:
    labels = json.loads((ct.root / "masks" / "labels.json").read_text())["labels"]
    assert ct.ds.card["labels"] == labels
    truth = {vol.name: vol.labels for task in plan_patients(CT) for vol in render_patient(CT, task)}
    for name, expected in truth.items():
        mask = ct.ds.mask(name)
        assert mask is not None and mask.shape == (1, *CT_SHAPE)
        np.testing.assert_array_equal(mask[0, :, :, 2:-2], expected)  # no resampling: the phantom's map, padded
        assert not mask[0, :, :, :2].any() and not mask[0, :, :, -2:].any()
        row = ct.ds.series.set_index("series_id").loc[name]
        assert list(row["labels_present"]) == sorted(int(i) for i in np.unique(expected) if i)
    # 2D: axial slices of the same grid (48 x 48 pixels, no resize) carry the findings lesions.csv lists.
    base = default_config("ct-rate")
    cfg = dataclasses.replace(base, dims=2, spatial=dataclasses.replace(base.spatial, target_spacing=None, shape=CT_SHAPE),
                              slicing=SliceConfig(slice_shape=(48, 48)))
    ds = prepare_dataset("ct-rate", ct.root, tmp_path / "ct2d", cfg)
    ids = {name: int(i) for i, name in labels.items()}
    listed = pd.read_csv(ct.root / "lesions.csv").fillna({"findings": ""})
    listed["series_id"] = listed["VolumeName"].str.removesuffix(".nii.gz")
    listed = listed.set_index(["series_id", "slice_index"])
    slices = ds.slices
    assert slices is not None and (slices["labels_present"].map(len) > 0).any()
    for row in slices.itertuples():
        if not 2 <= row.slice_index < CT_SHAPE[2] - 2:
            continue  # padding slices
        names = listed.loc[(row.series_id, row.slice_index - 2), "findings"]
        assert list(row.labels_present) == sorted(ids[n] for n in names.split(";") if n)
        assert row.lesion == int(bool(names))
