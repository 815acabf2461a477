"""nnU-Net v2 export: passes nnU-Net's own dataset-integrity checks (re-implemented below), remaps labels, resumes, refuses.

:func:`verify_dataset_integrity` re-implements ``nnunetv2/experiment_planning/verify_dataset_integrity.py``
(MIC-DKFZ/nnUNet) with the helpers it calls (``get_filenames_of_train_images_and_targets``,
``LabelManager``, ``determine_reader_writer_from_dataset_json``, ``NaturalImage2DIO``/``SimpleITKIO``
``read_images``), check for check: required keys, ``imagesTr``/``labelsTr`` naming (identifiers are the
image names less ``_XXXX`` + file ending, every hidden file included as nnU-Net's ``subfiles`` does),
``numTraining``, a label file per case, background 0 and consecutive labels, label values a subset of the
declared ones, and per case no NaN, image and label of the same shape and spacing, one file per channel.
What nnU-Net only warns about (SimpleITK origin and direction, NIfTI affine) is an error here: radlens
promises identical geometry. nnunetv2 itself is not installed (it pulls a CUDA torch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from support.mask_layouts import write_mask_bids
from support.prepared_tissue import tissue_prepared

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset
from radlens.prepare.exporters.nnunet import export_nnunet
from radlens.prepare.intensity import to_uint8
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.spatial import SpatialConfig

TISSUE = {"background": 0, "CSF": 1, "grey matter": 2, "white matter": 3, "lesion": 4}

# --- nnU-Net v2's verify_dataset_integrity, re-implemented -------------------------------------------------

NATURAL_ENDINGS = (".png", ".bmp", ".tif")  # NaturalImage2DIO.supported_file_endings
SITK_ENDINGS = (".nii.gz", ".nrrd", ".mha", ".gipl")  # SimpleITKIO: next in LIST_OF_IO_CLASSES


def _subfiles(folder: Path, suffix: str) -> list[str]:
    """batchgenerators' ``subfiles(folder, join=False, suffix=...)``: every file (hidden ones too), sorted."""
    return sorted(f for f in os.listdir(folder) if (folder / f).is_file() and f.endswith(suffix))


def _train_cases(folder: Path, dataset_json: dict) -> dict[str, dict]:
    """``get_filenames_of_train_images_and_targets`` for the imagesTr/labelsTr layout."""
    ending = dataset_json["file_ending"]
    files = _subfiles(folder / "imagesTr", ending)
    identifiers = np.unique([f[: -(len(ending) + 5)] for f in files])  # 4-digit channel index
    cases = {}
    for ident in identifiers:
        pattern = re.compile(re.escape(ident) + r"_\d\d\d\d" + re.escape(ending))
        cases[str(ident)] = {"images": [folder / "imagesTr" / f for f in files if pattern.fullmatch(f)],
                             "label": folder / "labelsTr" / f"{ident}{ending}"}
    return cases


def _expected_labels(labels: dict) -> list[int]:
    """``LabelManager``: background declared and 0; all labels (regions flattened, ignore last)."""
    assert "background" in labels, "Background label not declared"
    assert not isinstance(labels["background"], (list, tuple)) and int(labels["background"]) == 0
    found = []
    for key, value in labels.items():
        if key == "ignore":
            continue
        found += [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
    expected = sorted(set(found))
    if "ignore" in labels:
        assert labels["ignore"] == max(expected) + 1
        expected.append(labels["ignore"])
    return expected


def _reader(dataset_json: dict) -> str:
    """``determine_reader_writer_from_dataset_json`` for the two readers radlens writes for."""
    name = dataset_json.get("overwrite_image_reader_writer")
    if name and name != "None":
        return name
    ending = dataset_json["file_ending"].lower()
    if ending in NATURAL_ENDINGS:
        return "NaturalImage2DIO"
    assert ending in SITK_ENDINGS, f"Unable to determine a reader for file ending {ending}"
    return "SimpleITKIO"


def _read(reader: str, files: list[Path]) -> tuple[np.ndarray, dict]:
    """``read_images`` of NaturalImage2DIO (grey 2D -> (1, 1, H, W), spacing (999, 1, 1)) or SimpleITKIO."""
    if reader == "NaturalImage2DIO":
        images = []
        for f in files:
            array = np.asarray(Image.open(f))
            if array.ndim == 3:
                assert array.shape[-1] in (3, 4), "If image has three dimensions then the last dimension must be RGB(A)"
                images.append(array.transpose((2, 0, 1))[:, None])
            else:
                images.append(array[None, None])
        assert len({i.shape for i in images}) == 1, "Not all input images have the same shape"
        return np.vstack(images).astype(np.float32), {"spacing": (999, 1, 1)}
    assert reader == "SimpleITKIO", reader
    import SimpleITK as sitk

    images, spacings, origins, directions = [], [], [], []
    for f in files:
        image = sitk.ReadImage(str(f))
        spacings.append(image.GetSpacing())
        origins.append(image.GetOrigin())
        directions.append(image.GetDirection())
        array = sitk.GetArrayFromImage(image)
        assert array.ndim == 3, f"radlens writes 3D NIfTI, got {array.ndim}D in {f}"
        images.append(array[None])
    assert len({i.shape for i in images}) == 1 and len(set(spacings)) == 1
    return np.vstack(images).astype(np.float32), {
        "spacing": list(np.abs(spacings[0][::-1])),
        "sitk_stuff": {"spacing": spacings[0], "origin": origins[0], "direction": directions[0]}}


def verify_dataset_integrity(folder: Path) -> None:
    """nnU-Net v2's ``verify_dataset_integrity(folder)``: AssertionError/RuntimeError on what it rejects."""
    assert (folder / "dataset.json").is_file(), "There needs to be a dataset.json file in folder"
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir()
    required = ["labels", "channel_names", "numTraining", "file_ending"]
    assert all(k in dataset_json for k in required), f"not all required keys are present in dataset.json: {required}"
    num_modalities = len(dataset_json["channel_names"])
    ending = dataset_json["file_ending"]
    dataset = _train_cases(folder, dataset_json)
    assert len(dataset) == dataset_json["numTraining"], "Did not find the expected number of training cases"
    label_identifiers = [f[: -len(ending)] for f in _subfiles(folder / "labelsTr", ending)]
    missing = [c for c in dataset if c not in label_identifiers]
    assert not missing, f"not all training cases have a label file in labelsTr: {missing}"
    expected = _expected_labels(dataset_json["labels"])
    assert all(np.ediff1d(expected) == 1), "Labels must be in consecutive order (0, 1, 2, ...)"
    reader = _reader(dataset_json)
    for case, files in dataset.items():
        seg, seg_props = _read(reader, [files["label"]])
        unexpected = [v for v in np.unique(seg) if v not in expected]
        if unexpected:
            raise RuntimeError(f"Unexpected labels found in file {files['label']}: {unexpected}")
        images, props = _read(reader, files["images"])
        assert not np.isnan(images).any() and not np.isnan(seg).any(), case
        assert images.shape[1:] == seg.shape[1:], f"Shape mismatch between segmentation and images: {case}"
        assert np.allclose(props["spacing"], seg_props["spacing"]), f"Spacing mismatch: {case}"
        assert len(images) == num_modalities, f"Unexpected number of modalities: {case}"
        if "sitk_stuff" in props:  # nnU-Net warns; radlens promises the same geometry
            assert np.allclose(props["sitk_stuff"]["origin"], seg_props["sitk_stuff"]["origin"]), case
            assert np.allclose(props["sitk_stuff"]["direction"], seg_props["sitk_stuff"]["direction"]), case


# --- the export ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return tissue_prepared(tmp_path_factory, dims=2)


@pytest.fixture(scope="module")
def exported(prepared: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("nnunet_raw")
    assert main(["export", "nnunet", str(prepared.path), str(raw), "--dataset_id", "7", "--name", "Tissue",
                 "--test_split", "test"]) == 0
    return raw / "Dataset007_Tissue"


def test_2d_png_export_passes_nnunet_integrity_checks(exported: Path, prepared: PreparedDataset) -> None:
    verify_dataset_integrity(exported)
    data = json.loads((exported / "dataset.json").read_text())
    slices = prepared.slices
    assert slices is not None
    assert data["labels"] == TISSUE and data["channel_names"] == {"0": "MRI"} and data["file_ending"] == ".png"
    assert data["overwrite_image_reader_writer"] == "NaturalImage2DIO" and data["name"] == "Tissue"
    assert data["numTraining"] == int(slices["split"].isin(["train", "validation"]).sum())
    cases = pd.read_csv(exported / "cases.csv")
    test = cases[cases["split"] == "test"]
    assert len(test) == int((slices["split"] == "test").sum()) and test["image"].str.startswith("imagesTs/").all()
    assert sorted(os.listdir(exported / "labelsTs")) == sorted(Path(p).name for p in test["label"])
    # Pixels: the prepared slice mapped [0, 1] -> 0..255, the mask as uint8 label ids (never 0/255).
    slice_ids = slices.set_index(["series_id", "row"])["slice_id"]
    for row in cases.sample(6, random_state=0).itertuples():
        slice_id = slice_ids[(row.series_id, int(row.slice))]
        image, label = Image.open(exported / row.image), Image.open(exported / row.label)
        assert image.mode == "L" and label.mode == "L" and image.size == label.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(image), to_uint8(np.asarray(prepared.slice(slice_id))))
        np.testing.assert_array_equal(np.asarray(label), np.asarray(prepared.slice_mask(slice_id)))
    provenance = json.loads((exported / "radlens_export.json").read_text())
    assert [m["source_id"] for m in provenance["labels"]] == [0, 1, 2, 3, 4]
    assert provenance["png_intensity"].startswith("prepared values [0.0, 1.0] -> 0..255 (uint8)")


def test_the_checks_catch_what_nnunet_rejects(exported: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "Dataset007_Tissue"
    shutil.copytree(exported, broken)
    first = max(sorted(os.listdir(broken / "labelsTr")), key=lambda f: int(np.asarray(Image.open(broken / "labelsTr" / f)).any()))
    label = np.asarray(Image.open(broken / "labelsTr" / first))
    assert label.any()
    Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8)).save(broken / "labelsTr" / first)  # a 0/255 mask
    with pytest.raises(RuntimeError, match="Unexpected labels"):
        verify_dataset_integrity(broken)
    (broken / "labelsTr" / first).unlink()
    with pytest.raises(AssertionError, match="label file"):
        verify_dataset_integrity(broken)


def test_3d_nifti_export_remaps_labels_and_keeps_the_geometry(tmp_path: Path) -> None:
    write_mask_bids(tmp_path / "bids", subjects=4)  # labels 0, 1, 2, 5 (not consecutive)
    cfg = dataclasses.replace(default_config("bids"), dims=3, spatial=SpatialConfig(target_spacing=(1.5, 1.5, 2.0)))
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "prepared", cfg)
    folder = export_nnunet(ds.path, tmp_path / "raw", dataset_id=12, name="Cubes")
    verify_dataset_integrity(folder)
    data = json.loads((folder / "dataset.json").read_text())
    assert data["labels"] == {"background": 0, "tumour": 1, "edema": 2, "cyst": 3} and data["file_ending"] == ".nii.gz"
    assert "overwrite_image_reader_writer" not in data and data["numTraining"] == 4
    # Back through radlens' nnU-Net importer: the same grid, the label maps with ids remapped 5 -> 3.
    back = prepare_dataset("nnunet", folder, tmp_path / "back", default_config("nnunet"))
    assert back.failures.empty and back.labels == {0: "background", 1: "tumour", 2: "edema", 3: "cyst"}
    series = ds.series.set_index("series_id")
    for row in back.series.itertuples():
        source = row.series_id.removesuffix("_0000")
        original = np.asarray(ds.mask(source))
        np.testing.assert_array_equal(np.asarray(back.mask(row.series_id)), np.where(original == 5, 3, original))
        assert list(row.spacing) == pytest.approx(list(series.loc[source, "spacing"]))
    # 2D PNG slices cut from the volumes: one case per axial slice, labels remapped too.
    slices = export_nnunet(ds.path, tmp_path / "raw", dataset_id=13, name="CubeSlices", dim=2, png_dtype="uint16")
    verify_dataset_integrity(slices)
    depth = sum(int(ds.array(s).shape[-1]) for s in ds.series["series_id"])
    assert json.loads((slices / "dataset.json").read_text())["numTraining"] == depth
    image = np.asarray(Image.open(next((slices / "imagesTr").iterdir())))
    assert image.dtype == np.uint16 and image.max() > 255


def test_a_rerun_completes_an_interrupted_export_and_rewrites_nothing(prepared: PreparedDataset, tmp_path: Path) -> None:
    folder = export_nnunet(prepared.path, tmp_path, dataset_id=3, name="T2", contrasts=("T2w",))
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".radlens-output.json")
    stamps = {p: p.stat().st_mtime_ns for p in files}
    # Killed part-way: some cases and dataset.json missing, a temporary file left behind.
    victims = sorted((folder / "imagesTr").iterdir())[:3] + sorted((folder / "labelsTr").iterdir())[-2:]
    for path in [*victims, folder / "dataset.json"]:
        path.unlink()
    (folder / "imagesTr" / ".x_0000.png.abcd.tmp").write_bytes(b"partial")
    assert export_nnunet(prepared.path, tmp_path, dataset_id=3, name="T2", contrasts=("T2w",)) == folder
    verify_dataset_integrity(folder)
    assert not list(folder.rglob("*.tmp"))
    for path in files:
        assert path.is_file()
        if path not in victims and path.name not in ("dataset.json", "cases.csv"):
            assert path.stat().st_mtime_ns == stamps[path], path  # kept, not rewritten
    cases = pd.read_csv(folder / "cases.csv")
    assert set(cases["contrast"]) == {"T2w"}


def test_refusals(prepared: PreparedDataset, tmp_path: Path) -> None:
    folder = export_nnunet(prepared.path, tmp_path, dataset_id=5, name="Brain", splits=("validation",))
    with pytest.raises(InputError, match="holds another export") as err:
        export_nnunet(prepared.path, tmp_path, dataset_id=5, name="Brain", splits=("validation",), png_dtype="uint16")
    assert err.value.path == str(folder)
    with pytest.raises(InputError, match="another nnU-Net dataset with id 005"):
        export_nnunet(prepared.path, tmp_path, dataset_id=5, name="Other")
    (tmp_path / "Dataset006_Mine").mkdir()
    (tmp_path / "Dataset006_Mine" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        export_nnunet(prepared.path, tmp_path, dataset_id=6, name="Mine")
    assert (tmp_path / "Dataset006_Mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(InputError, match="no 3D geometry"):
        export_nnunet(prepared.path, tmp_path / "x", dim=3)
    with pytest.raises(ConfigError, match="dataset_id must be 1..999"):
        export_nnunet(prepared.path, tmp_path / "x", dataset_id=1000)
    with pytest.raises(ConfigError, match="name 'my data'"):
        export_nnunet(prepared.path, tmp_path / "x", name="my data")
    with pytest.raises(InputError, match="no training case"):
        export_nnunet(prepared.path, tmp_path / "x", splits=("test",), test_split="test")
    with pytest.raises(InputError, match=r"no masked series .* of contrast \['FLAIR'\]"):
        export_nnunet(prepared.path, tmp_path / "x", contrasts=("FLAIR",))
