"""Multi-class metrics equal sklearn's; chance levels, patient-bootstrap CIs, the confusion figure."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score, roc_auc_score

from radlens.evaluate.multiclass import class_metrics, confusion_figure, evaluate_classes


def _data(n: int = 60, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]  # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs


def test_class_metrics_equal_sklearn():
    y, probs = _data()
    pred = probs.argmax(1)
    got = class_metrics(y, probs)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["macro_auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    np.testing.assert_allclose(got["recall"], recall_score(y, pred, average=None))
    np.testing.assert_array_equal(got["confusion"], confusion_matrix(y, pred, labels=range(4)))


def test_a_class_missing_from_the_labels():
    y, probs = _data()
    keep = y != 2
    got = class_metrics(y[keep], probs[keep])
    assert np.isnan(got["recall"][2]) and np.isnan(got["auroc"][2])
    # the macro AUROC is over the classes that occur, not lost to the one that does not
    present = [c for c in range(4) if c != 2]
    expected_auroc = np.mean([roc_auc_score(y[keep] == c, probs[keep][:, c]) for c in present])
    assert got["macro_auroc"] == pytest.approx(expected_auroc)
    # sklearn's balanced accuracy also averages over the classes present in y_true
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y[keep], probs[keep].argmax(1))
    assert got["balanced_accuracy"] == pytest.approx(expected)


def test_evaluate_classes_chance_cis_and_confusion():
    y, probs = _data(n=80, c=3, seed=1)
    patients = np.repeat(np.arange(40), 2)  # two series per patient, resampled together
    names = ["T1w", "T2w", "FLAIR"]
    m = evaluate_classes(y, probs, patients, names, n_bootstrap=200, seed=3)
    assert m["chance"]["balanced_accuracy"] == pytest.approx(1 / 3) and m["chance"]["macro_auroc"] == 0.5
    assert m["chance"]["accuracy"] == pytest.approx(np.bincount(y).max() / len(y))
    for key in ("accuracy", "balanced_accuracy", "macro_auroc"):
        ci = m["ci"][key]
        assert ci["n"] == 200 and ci["low"] <= m[key] <= ci["high"] and ci["low"] < ci["high"]
    assert set(m["per_class"]) == set(names) and sum(v["n"] for v in m["per_class"].values()) == 80
    assert m["per_class"]["T2w"]["recall"] == pytest.approx(recall_score(y, probs.argmax(1), average=None)[1])
    counts = np.array(m["confusion_matrix"]["counts"])
    assert counts.shape == (3, 3) and counts.sum() == 80 and m["confusion_matrix"]["rows"] == "true"
    assert m["bootstrap"]["n_patients"] == 40
    again = evaluate_classes(y, probs, patients, names, n_bootstrap=200, seed=3)
    assert again["ci"] == m["ci"]  # seeded


def test_confusion_figure(tmp_path):
    path = confusion_figure(np.array([[3, 1], [0, 4]]), ["T1w", "T2*w"], tmp_path / "confusion.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_classes_names_a_class_without_cases_and_a_thin_split():
    y, probs = _data(n=12, c=3, seed=2)
    y[y == 1] = 0  # class 1 never occurs
    patients = np.arange(12) % 4  # four patients
    m = evaluate_classes(y, probs, patients, ["A", "B", "C"], n_bootstrap=50, seed=0)
    assert m["over"] == ["A", "C"] and list(m["left_out"]) == ["B"]
    assert m["macro_auroc"] is not None and m["ci"]["macro_auroc"]["n"] > 0
    text = " ".join(m["notes"])
    assert "over 2 of 3 classes" in text and "B (no case among 12)" in text and "only 4 patient(s)" in text
