"""Segmentation metrics: Dice/IoU per label by hand, empty-vs-empty, HD95 in mm, patient-bootstrap summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radlens.metrics.segmentation import case_metrics, dice_from_counts, hd95, iou_from_counts, overlap_counts, summarize

LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "tumour"}


def test_dice_and_iou_of_known_overlaps() -> None:
    truth = np.zeros((10, 10), np.uint8)
    pred = np.zeros((10, 10), np.uint8)
    truth[0:4, 0:4] = 1  # 16 voxels
    pred[0:4, 2:6] = 1  # 16 voxels, 8 shared
    truth[6:8, 6:8] = 2  # spleen missed entirely
    pred[9, 9] = 2  # ... and one false voxel
    counts = overlap_counts(pred, truth, [1, 2, 3])
    assert counts.tolist() == [[8, 16, 16], [0, 1, 4], [0, 0, 0]]
    np.testing.assert_allclose(dice_from_counts(counts), [0.5, 0.0, 1.0])  # tumour: empty vs empty = 1
    np.testing.assert_allclose(iou_from_counts(counts), [8 / 24, 0.0, 1.0])
    row = case_metrics(pred, truth, LABELS)
    assert row["dice:liver"] == 0.5 and row["dice:spleen"] == 0.0 and row["dice:tumour"] == 1.0
    assert row["mean_dice"] == pytest.approx(0.5) and row["voxels_true:spleen"] == 4 and row["voxels_pred:spleen"] == 1
    assert "dice:background" not in row
    # Dice agrees with MONAI's on a random 3D case.
    import torch
    from monai.metrics import compute_dice

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (6, 7, 8)), rng.integers(0, 3, (6, 7, 8))
    onehot = [torch.from_numpy(np.stack([x == k for k in range(3)])[None].astype(np.float32)) for x in (a, b)]
    expected = compute_dice(*onehot, include_background=False).numpy().ravel()
    np.testing.assert_allclose(dice_from_counts(overlap_counts(a, b, [1, 2])), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        overlap_counts(a, b[:-1], [1])


def test_hd95_in_millimetres_and_its_undefined_cases() -> None:
    truth = np.zeros((12, 12, 4), np.uint8)
    truth[2:5, 2:5, 1:3] = 1
    pred = np.roll(truth, 3, axis=0)  # shifted 3 voxels along the first axis
    assert hd95(pred, truth, 1) == pytest.approx(3.0)
    assert hd95(pred, truth, 1, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(truth, truth, 1) == 0.0
    assert hd95(pred, truth, 2) == 0.0  # absent from both
    assert np.isnan(hd95(np.zeros_like(truth), truth, 1))  # absent from the prediction only
    row = case_metrics(pred, truth, {0: "background", 1: "a", 2: "b"}, spacing=(2.0, 1.0, 1.0), with_hd95=True)
    assert row["hd95:a"] == pytest.approx(6.0) and row["hd95:b"] == 0.0


def test_summary_means_and_patient_bootstrap() -> None:
    rows = []
    for patient, dices in (("p1", (1.0, 1.0)), ("p2", (0.5, 0.5)), ("p3", (0.0, 0.0))):
        for d in dices:  # two cases per patient, same Dice
            rows.append({"patient_id": patient, "dice:liver": d, "iou:liver": d / (2 - d), "voxels_true:liver": 10,
                         "hd95:liver": float("nan") if d == 0 else 1.0, "mean_dice": d})
    cases = pd.DataFrame(rows)
    out = summarize(cases, ["liver"], n_bootstrap=400, seed=1)
    liver = out["per_label"]["liver"]
    assert liver["dice"] == pytest.approx(0.5) and out["mean_dice"] == pytest.approx(0.5)
    assert liver["cases_present"] == 6 and liver["hd95"] == 1.0 and liver["hd95_defined_cases"] == 4
    ci = out["mean_dice_ci"]
    assert ci["n"] == 400 and 0.0 <= ci["low"] < 0.5 < ci["high"] <= 1.0
    assert out["bootstrap"]["n_patients"] == 3 and out["n_cases"] == 6
    # Patients are resampled whole: when every patient scores the same, the interval has no width.
    flat = summarize(cases.assign(mean_dice=0.75), ["liver"], n_bootstrap=50)
    assert flat["mean_dice_ci"] == {"low": 0.75, "high": 0.75, "n": 50}
    same = summarize(cases, ["liver"], n_bootstrap=400, seed=1)
    assert same["mean_dice_ci"] == ci  # seeded
