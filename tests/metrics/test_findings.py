"""Detection metrics: hand-computed values, sklearn agreement, validation thresholds, patient bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from radlens.metrics import findings as metrics
from radlens.metrics.explain import macro_line
from radlens.metrics.findings import (
    aggregate_scans,
    binary_metrics,
    choose_threshold,
    evaluate_findings,
    patient_bootstrap,
    score_metrics,
    threshold_metrics,
)


def test_threshold_metrics_by_hand():
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.2, 0.8])
    m = threshold_metrics(y, s, 0.5)  # predicted 1 0 1 0 1: tp 2, fp 1, fn 1, tn 1
    assert m == pytest.approx({"f1": 2 / 3, "precision": 2 / 3, "recall": 2 / 3, "specificity": 0.5, "accuracy": 0.6})
    pred = (s >= 0.5).astype(int)
    assert m["f1"] == pytest.approx(f1_score(y, pred))  # the positive class's F1, not a mean over classes
    assert m["f1"] != pytest.approx(f1_score(y, pred, average="macro"))


def test_score_metrics_by_hand_and_against_sklearn():
    m = score_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert m["auroc"] == pytest.approx(0.75)
    assert m["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = rng.random(30) < 0.3
        y[:2] = [True, False]
        s = np.round(rng.random(30), 1)  # many ties
        got = score_metrics(y, s)
        assert got["auroc"] == pytest.approx(roc_auc_score(y, s))
        assert got["auprc"] == pytest.approx(average_precision_score(y, s))
        t = threshold_metrics(y, s, 0.5)
        assert t["precision"] == pytest.approx(precision_score(y, s >= 0.5, zero_division=0))
        assert t["recall"] == pytest.approx(recall_score(y, s >= 0.5))


def test_auroc_uses_continuous_scores_and_one_class_is_nan():
    y = np.array([0, 0, 1, 1])
    assert score_metrics(y, np.array([0.1, 0.2, 0.3, 0.4]))["auroc"] == 1.0
    assert score_metrics(y, np.array([0.1, 0.35, 0.3, 0.4]))["auroc"] == 0.75  # all < 0.5: thresholding would give 0.5
    assert math.isnan(binary_metrics(np.ones(4), np.arange(4.0), 0.5)["auroc"])


def test_choose_threshold_youden_and_f1():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.3, 0.6, 0.8])
    assert choose_threshold(y, s, "youden") == 0.6
    assert choose_threshold(y, s, "f1") == 0.6
    # Few negatives: Youden keeps specificity (0.7: J 5/6 vs 1/2), F1 ignores TN (0.2: 12/13 vs 10/11).
    y2 = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    s2 = np.array([0.9, 0.85, 0.8, 0.75, 0.7, 0.2, 0.6, 0.1])
    assert choose_threshold(y2, s2, "youden") == 0.7
    assert choose_threshold(y2, s2, "f1") == 0.2
    with pytest.raises(ValueError, match="one class"):
        choose_threshold(np.zeros(3), s[:3])


def test_threshold_from_validation_is_applied_to_test():
    val_y = np.array([[0], [0], [1], [1]])
    val_s = np.array([[0.1], [0.3], [0.7], [0.9]])
    test_y = np.array([[0], [0], [1], [1], [1], [0]])
    test_s = np.array([[0.2], [0.4], [0.5], [0.6], [0.8], [0.75]])  # the test-optimal threshold would be 0.5
    result = evaluate_findings(test_y, test_s, np.arange(6), val_y, val_s, ["A"], n_bootstrap=10)
    finding = result["per_finding"]["A"]
    assert finding["threshold"] == 0.7 and finding["threshold_source"] == "validation"
    assert finding["f1"] == pytest.approx(threshold_metrics(test_y[:, 0], test_s[:, 0], 0.7)["f1"])
    assert finding["f1"] != pytest.approx(threshold_metrics(test_y[:, 0], test_s[:, 0], 0.5)["f1"])
    assert result["threshold"] == {"method": "youden", "split": "validation"}


def test_one_class_validation_falls_back_to_default_threshold():
    y = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    s = np.random.default_rng(0).random((4, 2))
    result = evaluate_findings(y, s, np.arange(4), np.array([[1, 0], [1, 1]]), s[:2], ["A", "B"], n_bootstrap=5)
    assert result["per_finding"]["A"]["threshold_source"] == "default"
    assert result["per_finding"]["A"]["threshold"] == 0.5


def _data(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), 2)
    y = (rng.random((len(patients), 2)) < 0.4).astype(int)
    s = np.clip(y * 0.3 + rng.random(y.shape) * 0.7, 0, 1)
    return y, s, patients


def test_bootstrap_really_resamples_and_is_seeded():
    y, s, patients = _data()
    thresholds = np.array([0.5, 0.5])
    a = patient_bootstrap(y, s, patients, thresholds, n=50, seed=1)
    b = patient_bootstrap(y, s, patients, thresholds, n=50, seed=1)
    c = patient_bootstrap(y, s, patients, thresholds, n=50, seed=2)
    auroc = a["per_finding"][0]["auroc"]
    assert len(auroc) == 50 and auroc.std() > 0
    np.testing.assert_array_equal(auroc, b["per_finding"][0]["auroc"])
    assert not np.array_equal(auroc, c["per_finding"][0]["auroc"])
    result = evaluate_findings(y, s, patients, y, s, ["A", "B"], n_bootstrap=50, seed=3)
    ci = result["per_finding"]["A"]["ci"]["auroc"]
    assert ci["low"] < result["per_finding"]["A"]["auroc"] < ci["high"] and ci["n"] == 50
    assert result["macro"]["ci"]["auroc"]["high"] > result["macro"]["ci"]["auroc"]["low"]


def test_bootstrap_resamples_patients_as_units(monkeypatch):
    # Patient 0 has three scans, the others one: every scan gets a unique score to trace it.
    patients = np.array([0, 0, 0, *range(1, 20)])
    y = np.array([[i % 2] for i in range(len(patients))])
    s = np.arange(len(patients), dtype=float)[:, None] / 100
    seen = []
    real = metrics.binary_metrics
    monkeypatch.setattr(metrics, "binary_metrics", lambda yy, ss, t: seen.append(ss.copy()) or real(yy, ss, t))
    patient_bootstrap(y, s, patients, np.array([0.1]), n=40, seed=0)
    assert len(seen) > 30
    for drawn in seen:
        counts = [np.sum(drawn == s[i, 0]) for i in range(3)]
        assert counts[0] == counts[1] == counts[2]  # patient 0's scans always come together
    assert len({len(d) for d in seen}) > 1  # sizes vary with how often patient 0 was drawn


def test_bootstrap_skips_one_class_resamples_and_reports_count():
    patients = np.arange(30)
    y = np.zeros((30, 1), dtype=int)
    y[0] = 1  # one positive patient: many resamples miss it
    s = np.linspace(0, 1, 30)[:, None]
    result = evaluate_findings(y, s, patients, y, s, ["rare"], n_bootstrap=60, seed=0)
    n_used = result["per_finding"]["rare"]["ci"]["auroc"]["n"]
    assert 0 < n_used < 60
    assert result["bootstrap"]["n_used_macro"] == n_used and result["bootstrap"]["unit"] == "patient"


def test_aggregate_scans_means_reconstructions():
    table = pd.DataFrame({
        "scan_id": ["a", "a", "b"], "patient_id": ["p1", "p1", "p2"], "A": [0.2, 0.6, 0.9], "B": [1.0, 0.0, 0.5],
    })
    out = aggregate_scans(table, ["A", "B"])
    assert out["scan_id"].tolist() == ["a", "b"] and out["patient_id"].tolist() == ["p1", "p2"]
    np.testing.assert_allclose(out[["A", "B"]].to_numpy(), [[0.4, 0.5], [0.9, 0.5]])


def test_macro_and_weighted_means():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 1]])
    s = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.2], [0.1, 0.9]])
    result = evaluate_findings(y, s, np.arange(4), y, s, ["A", "B"], n_bootstrap=5)
    a, b = result["per_finding"]["A"]["auprc"], result["per_finding"]["B"]["auprc"]
    assert result["macro"]["auprc"] == pytest.approx((a + b) / 2)
    assert result["weighted"]["auprc"] == pytest.approx((a * 0.5 + b * 0.25) / 0.75)


def test_a_finding_without_positives_is_left_out_of_the_macro_with_its_reason_and_the_ci_survives():
    rng = np.random.default_rng(0)
    patients = np.arange(40)
    y = np.stack([rng.random(40) < 0.4, np.zeros(40, bool), rng.random(40) < 0.5], axis=1).astype(int)
    s = np.clip(y * 0.4 + rng.random((40, 3)) * 0.6, 0, 1)
    result = evaluate_findings(y, s, patients, y, s, ["A", "never", "C"], n_bootstrap=100, seed=0)
    never = result["per_finding"]["never"]
    assert never["defined"] is False and never["auroc"] is None and never["recall"] is None
    assert "no positive case among 40 scans" in never["note"]
    assert result["left_out"] == {"never": "no positive case among 40 scans"}
    assert result["macro"]["over"] == ["A", "C"] and result["macro"]["n_findings"] == 2
    a, c = result["per_finding"]["A"]["auroc"], result["per_finding"]["C"]["auroc"]
    assert result["macro"]["auroc"] == pytest.approx((a + c) / 2)
    assert result["macro"]["ci"]["auroc"]["n"] == 100  # the undefined finding no longer drops every resample
    assert result["macro"]["ci"]["auroc"]["low"] < result["macro"]["auroc"] < result["macro"]["ci"]["auroc"]["high"]
    assert any("over 2 of 3 findings" in n and "never (no positive case" in n for n in result["notes"])
    line = macro_line(result)
    assert line.startswith(f"macro AUROC {result['macro']['auroc']:.3f} (95% CI ")
    assert "over 2 of 3 findings; left out: never (no positive case among 40 scans); 40 scans from 40 patient(s)" in line


def test_macro_ci_is_over_the_findings_defined_in_each_resample():
    patients = np.arange(30)
    y = np.zeros((30, 2), dtype=int)
    y[:15, 0] = 1
    y[0, 1] = 1  # one positive patient: many resamples miss it
    s = np.linspace(0, 1, 30)[:, None].repeat(2, axis=1)
    result = evaluate_findings(y, s, patients, y, s, ["common", "rare"], n_bootstrap=60, seed=0)
    n_rare = result["per_finding"]["rare"]["ci"]["auroc"]["n"]
    assert 0 < n_rare < 60 and result["macro"]["ci"]["auroc"]["n"] == 60
    assert result["bootstrap"]["n_resamples_with_fewer_findings"] == 60 - n_rare
    assert any(f"in {60 - n_rare} of 60 resamples" in n for n in result["notes"])


def test_a_split_with_few_patients_says_so():
    y = np.array([[1], [0], [1], [0], [1], [0]])
    s = np.array([[0.9], [0.2], [0.7], [0.4], [0.6], [0.1]])
    patients = np.array([0, 0, 1, 1, 2, 2])
    result = evaluate_findings(y, s, patients, y, s, ["A"], n_bootstrap=20)
    assert any("only 3 patient(s) (6 scans)" in n for n in result["notes"])
    assert "6 scans from 3 patient(s) (fewer than 5: not reliable)" in macro_line(result)


def test_no_ci_is_named_when_it_cannot_be_computed():
    # Every patient is positive for "A" and negative for... nothing: no finding is defined at all.
    y = np.ones((6, 1), dtype=int)
    s = np.linspace(0, 1, 6)[:, None]
    result = evaluate_findings(y, s, np.arange(6), np.array([[0], [1]]), np.array([[0.2], [0.8]]), ["A"], n_bootstrap=10)
    assert result["macro"]["auroc"] is None and result["macro"]["over"] == [] and result["macro"]["ci"]["auroc"]["n"] == 0
    assert any(n.startswith("no CI for the macro AUROC: no finding is defined") for n in result["notes"])
    assert macro_line(result).startswith("macro AUROC n/a over 0 of 1 findings; left out: A (no negative case among 6 scans)")
