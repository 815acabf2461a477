"""`radlens evaluate seg`: per-case 3D Dice from re-stacked slice predictions, per-label means with CIs, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_tissue import tissue_prepared

from radlens.cli import main
from radlens.data.modules import preprocessing_from_card
from radlens.errors import InputError
from radlens.evaluate.seg import evaluate_seg, predict_case
from radlens.io.prepared import PreparedDataset
from radlens.metrics.segmentation import dice_from_counts, overlap_counts
from radlens.models.bundle import save_bundle
from radlens.models.registry import build_model

NAMES = ["CSF", "grey matter", "white matter", "lesion"]


def _bundle(ds: PreparedDataset, folder: Path, dims: int = 2, **preprocessing: object) -> Path:
    """An untrained tiny segmenter for ``ds`` saved as radlens train seg saves one (its predictions are arbitrary but fixed)."""
    torch.manual_seed(0)
    model = build_model({"kind": "unet-seg", "out_channels": 5, "spatial_dims": dims, "channels": [4, 8], "strides": [2],
                         "num_res_units": 0, "label_ids": [0, 1, 2, 3, 4]})
    pre = {**preprocessing_from_card(ds.card), "labels": ds.card["labels"], **preprocessing}
    return save_bundle(model, folder, pre)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return tissue_prepared(tmp_path_factory, dims=2)


@pytest.fixture(scope="module")
def evaluated(prepared: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("evalseg")
    bundle = _bundle(prepared, tmp / "bundle")
    assert main(["evaluate", "seg", str(bundle), str(prepared.path), str(tmp / "out"), "--n_bootstrap", "50",
                 "--save_masks", "--batch_size", "7"]) == 0
    return bundle, tmp / "out"


def test_dice_is_computed_per_case_on_the_restacked_slices(evaluated: tuple[Path, Path], prepared: PreparedDataset) -> None:
    from radlens.models.bundle import load_model

    bundle, out = evaluated
    cases = pd.read_csv(out / "cases.csv")
    test_series = sorted(set(prepared.split("test")["series_id"]))
    assert sorted(cases["series_id"]) == test_series and len(test_series) == 2
    model = load_model(bundle, kind="segmenter")
    for row in cases.itertuples():
        stack, truth = np.array(prepared.array(row.series_id)), np.asarray(prepared.mask(row.series_id))
        # One slice at a time, stacked again: the whole stack is one case (a 3D Dice).
        pred = np.stack([model.segment(torch.from_numpy(s)[None, None].float())[0].numpy() for s in stack])
        np.testing.assert_array_equal(np.load(out / "masks" / f"{row.series_id}.npy"), pred)
        dice = dice_from_counts(overlap_counts(pred, truth, [1, 2, 3, 4]))
        np.testing.assert_allclose([cases.loc[row.Index, f"dice:{n}"] for n in NAMES], dice)
        assert cases.loc[row.Index, "mean_dice"] == pytest.approx(dice.mean()) and row.slices == len(stack)
        if not (truth == 4).any() and not (pred == 4).any():
            assert cases.loc[row.Index, "dice:lesion"] == 1.0  # empty vs empty
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_cases"] == 2 and set(metrics["per_label"]) == set(NAMES)
    for name in NAMES:
        assert metrics["per_label"][name]["dice"] == pytest.approx(cases[f"dice:{name}"].mean())
    assert metrics["mean_dice"] == pytest.approx(cases["mean_dice"].mean()) and metrics["mean_dice_ci"]["n"] == 50
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["conventions"]["empty_vs_empty"] == 1.0
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "evaluate seg" and run["config"]["split"] == "test"


def test_contrasts_hd95_and_3d_volumes(prepared: PreparedDataset, tmp_path_factory: pytest.TempPathFactory,
                                       tmp_path: Path) -> None:
    bundle = _bundle(prepared, tmp_path / "b2")
    evaluate_seg(str(bundle), str(prepared.path), str(tmp_path / "t2"), contrasts=["T2w"], split="validation", n_bootstrap=0)
    cases = pd.read_csv(tmp_path / "t2" / "cases.csv")
    assert set(cases["contrast"]) == {"T2w"} and len(cases) == 1
    volumes = tissue_prepared(tmp_path_factory, dims=3)
    bundle3 = _bundle(volumes, tmp_path / "b3", dims=3)
    evaluate_seg(str(bundle3), str(volumes.path), str(tmp_path / "v"), hd95=True, n_bootstrap=20)
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert metrics["dims"] == 3 and metrics["hd95_unit"] == "mm" and metrics["n_cases"] == 2
    assert "hd95" in metrics["per_label"]["grey matter"]
    from radlens.models.bundle import load_model

    model = load_model(bundle3, kind="segmenter")
    sid = volumes.series.loc[volumes.series["split"] == "test", "series_id"].iloc[0]
    pred = predict_case(model, volumes.array(sid), 3)
    assert pred.shape == (1, 24, 28, 24) == volumes.mask(sid).shape


def test_mismatched_segmenters_and_outputs_are_refused(prepared: PreparedDataset, tmp_path: Path) -> None:
    volumes_bundle = _bundle(prepared, tmp_path / "b3d", dims=3)
    with pytest.raises(InputError, match="a 2D dataset, but the segmenter is 3D"):
        evaluate_seg(str(volumes_bundle), str(prepared.path), str(tmp_path / "o1"))
    renamed = _bundle(prepared, tmp_path / "bren", labels={"0": "background", "1": "tumour"})
    with pytest.raises(InputError, match="label 1 is 'CSF' here but 'tumour'"):
        evaluate_seg(str(renamed), str(prepared.path), str(tmp_path / "o2"))
    other = _bundle(prepared, tmp_path / "bint", prepare={"intensity": {"mri_percentiles": [1.0, 99.0]}})
    with pytest.raises(InputError, match="mri_percentiles"):
        evaluate_seg(str(other), str(prepared.path), str(tmp_path / "o3"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["evaluate", "seg", str(tmp_path / "b3d"), str(prepared.path), str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
