"""nnU-Net v2 raw datasets: every channel a series with its case's label map, dataset.json labels, imagesTs as test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from support.mask_layouts import BRIGHT, cube_volume, save

from radlens.errors import ConfigError, InputError
from radlens.io.prepared import parse_boxes
from radlens.prepare.masks import label_boxes
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.spatial import SpatialConfig

AFFINE = np.diag([1.0, 1.5, 3.0, 1.0])


def write_nnunet(root: Path, channels: dict[str, str], labels: dict[str, object]) -> None:
    root.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": channels, "labels": labels, "numTraining": 2,
                                                   "file_ending": ".nii.gz"}))
    for folder, cases in (("imagesTr", ("case_000", "case_001")), ("imagesTs", ("case_100",))):
        for k, case in enumerate(cases):
            image, mask = cube_volume(shift=k)
            for c in channels:
                save(image * (1 + int(c)), AFFINE, root / folder / f"{case}_{int(c):04d}.nii.gz")
            if folder == "imagesTr":
                save(np.where(mask == 5, 2, mask).astype(np.uint8), AFFINE, root / "labelsTr" / f"{case}.nii.gz")


def test_nnunet_import_with_label_maps(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_Cubes"
    write_nnunet(root, {"0": "T2", "1": "ADC"}, {"background": 0, "tumour": 1, "edema": 2})
    cfg = dataclasses.replace(default_config("nnunet"), spatial=SpatialConfig(target_spacing=(1.23, 1.23, 1.23)))
    ds = prepare_dataset("nnunet", root, tmp_path / "out", cfg)
    assert ds.labels == {0: "background", 1: "tumour", 2: "edema"} and ds.failures.empty
    series = ds.series.set_index("series_id")
    assert sorted(series.index) == ["case_000_0000", "case_000_0001", "case_001_0000", "case_001_0001",
                                    "case_100_0000", "case_100_0001"]
    assert set(series["patient_id"]) == {"case_000", "case_001", "case_100"} and set(series["modality"]) == {"MR"}
    assert series.loc["case_000_0001", "text"] == "ADC"
    assert (series.loc[["case_100_0000", "case_100_0001"], "split"] == "test").all()
    assert series.groupby("patient_id")["split"].nunique().eq(1).all()
    for sid in ("case_000_0000", "case_001_0001"):
        mask, image = ds.mask(sid), ds.array(sid)
        assert mask is not None and mask.shape == image.shape and set(np.unique(mask)) == {0, 1, 2}
        box = parse_boxes(series.loc[sid, "boxes"])[1]
        bright = label_boxes((image[0] > (image.min() + image.max()) / 2).astype(np.uint8))[1]
        assert list(box) == bright and list(series.loc[sid, "labels_present"]) == [1, 2]
    assert ds.mask("case_100_0000") is None and series.loc["case_100_0000", "mask_path"] == ""


def test_nnunet_refusals(tmp_path: Path) -> None:
    regions = tmp_path / "Dataset002_Regions"
    write_nnunet(regions, {"0": "MRI"}, {"background": 0, "whole": [1, 2], "core": 2})
    with pytest.raises(InputError, match="region") as err:
        prepare_dataset("nnunet", regions, tmp_path / "out", default_config("nnunet"))
    assert err.value.path.endswith("dataset.json")
    ct = tmp_path / "Dataset003_CT"
    write_nnunet(ct, {"0": "CT"}, {"background": 0, "organ": 1, "edema": 2})
    with pytest.raises(ConfigError, match="already_hu"):
        prepare_dataset("nnunet", ct, tmp_path / "out", dataclasses.replace(default_config("nnunet"), already_hu="no"))
    # A label map with an id dataset.json lacks, and one on another grid: those cases fail, naming the file.
    save(np.full((20, 16, 10), 3, np.uint8), AFFINE, ct / "labelsTr" / "case_000.nii.gz")
    save(np.zeros((20, 16, 10), np.uint8), np.diag([1.0, 1.5, 2.0, 1.0]), ct / "labelsTr" / "case_001.nii.gz")
    ds = prepare_dataset("nnunet", ct, tmp_path / "ct", dataclasses.replace(default_config("nnunet"), dims=3))
    reasons = dict(zip(ds.failures["path"], ds.failures["reason"]))
    assert reasons["imagesTr/case_000_0000.nii.gz"].startswith("case_000.nii.gz: label ids [3] are not in its label table")
    assert reasons["imagesTr/case_001_0000.nii.gz"].startswith(
        "case_001.nii.gz: label map affine differs from case_001_0000.nii.gz's")
    assert list(ds.series["series_id"]) == ["case_100_0000"] and ds.card["modality"] == "CT"
    # Read as HU: the bright cube's 500 HU in the default window [-1000, 1000] -> [-1, 1] is 0.5.
    assert ds.card["config"]["intensity"]["ct_output"] == "-1,1"
    assert float(ds.array("case_100_0000").max()) == pytest.approx(BRIGHT / 1000)
