"""Logistic probe on cached embeddings: separable embeddings give a high AUROC, thresholds come from validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radlens.errors import InputError

FINDINGS = ["Cardiomegaly", "Emphysema"]


def _embeddings(labels: np.ndarray, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """16-d embeddings where finding f moves dimension f by +2 (linearly separable) plus noise."""
    emb = rng.normal(0, 0.5, (len(labels), 16))
    emb[:, : labels.shape[1]] += 2.0 * labels + shift
    return emb


def test_separable_embeddings_give_high_auroc_with_validation_thresholds() -> None:
    from radlens.evaluate.probe import fit_logistic, logistic_probe, predict_logistic
    from radlens.metrics.findings import choose_threshold

    rng = np.random.default_rng(0)
    y = {s: rng.integers(0, 2, (n, 2)) for s, n in (("train", 80), ("val", 40), ("test", 40))}
    emb = {s: _embeddings(y[s], rng) for s in y}
    # The test split is shifted: a threshold chosen on test would differ from the validation one.
    emb["test"] = _embeddings(y["test"], rng, shift=0.7)
    metrics = logistic_probe(emb["train"], y["train"], emb["val"], y["val"], emb["test"], y["test"], findings=FINDINGS,
                             n_bootstrap=50)
    assert metrics["macro"]["auroc"] > 0.95
    val_scores = predict_logistic(fit_logistic(emb["train"], y["train"]), emb["val"])
    test_scores = predict_logistic(fit_logistic(emb["train"], y["train"]), emb["test"])
    for f, name in enumerate(FINDINGS):
        chosen = metrics["per_finding"][name]
        assert chosen["threshold_source"] == "validation"
        assert chosen["threshold"] == pytest.approx(choose_threshold(y["val"][:, f], val_scores[:, f]))
        assert chosen["threshold"] != pytest.approx(choose_threshold(y["test"][:, f], test_scores[:, f]))


def test_a_finding_with_one_training_class_gets_a_constant_score() -> None:
    from radlens.evaluate.probe import fit_logistic, predict_logistic

    emb = np.random.default_rng(1).normal(size=(10, 4))
    y = np.stack([np.zeros(10), np.arange(10) % 2], axis=1)
    scores = predict_logistic(fit_logistic(emb, y), emb)
    assert (scores[:, 0] == 0).all() and 0 < scores[:, 1].mean() < 1


def _write(root: Path, n_per_split: dict[str, int], seed: int = 0) -> tuple[Path, Path]:
    """A minimal prepared dataset (card + series table) and an embeddings folder for it, two slices per series."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in n_per_split.items():
        for i in range(n):
            labels = rng.integers(0, 2, 2)
            rows.append({"series_id": f"{split}{i}", "patient_id": f"p{split}{i // 2}", "scan_id": f"{split}{i}",
                         "split": split, **dict(zip(FINDINGS, labels.tolist()))})
    series = pd.DataFrame(rows)
    prepared = root / "prep"
    prepared.mkdir()
    series.to_parquet(prepared / "series.parquet", index=False)
    (prepared / "dataset.json").write_text(json.dumps({"dims": 2, "findings": FINDINGS, "array_shape": [8, 8]}))
    ids = series.loc[series.index.repeat(2), ["series_id", "patient_id", "scan_id", "split"]].reset_index(drop=True)
    ids.insert(0, "slice_id", [f"{s}:{k % 2}" for k, s in enumerate(ids["series_id"])])
    labels = series.loc[series.index.repeat(2), FINDINGS].to_numpy()
    emb = root / "emb"
    emb.mkdir()
    np.save(emb / "embeddings.npy", _embeddings(labels, rng).astype(np.float32))
    ids.to_parquet(emb / "ids.parquet", index=False)
    return prepared, emb


def test_evaluate_probe_writes_metrics_and_predictions(tmp_path: Path) -> None:
    from radlens.evaluate.probe import evaluate_probe

    prepared, emb = _write(tmp_path, {"train": 60, "validation": 30, "test": 30})
    assert evaluate_probe(str(emb), str(prepared), str(tmp_path / "out"), n_bootstrap=20) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["per_finding"]) == set(FINDINGS) and metrics["macro"]["auroc"] > 0.9
    assert metrics["probe"]["n_train"] == 60  # slices pooled to one row per series
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(predictions) == 30 and {"scan_id", "score:Emphysema", "pred:Emphysema"} <= set(predictions.columns)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["command"] == "evaluate probe"


def test_evaluate_probe_bad_input(tmp_path: Path) -> None:
    from radlens.evaluate.probe import evaluate_probe

    prepared, emb = _write(tmp_path, {"train": 6, "validation": 0, "test": 4})
    with pytest.raises(InputError, match="unknown finding"):
        evaluate_probe(str(emb), str(prepared), str(tmp_path / "a"), findings=["Cardiomegally"])
    with pytest.raises(InputError, match="'validation' is empty"):
        evaluate_probe(str(emb), str(prepared), str(tmp_path / "b"))
    with pytest.raises(InputError, match="not an embeddings folder"):
        evaluate_probe(str(prepared), str(prepared), str(tmp_path / "c"))
    assert not any((tmp_path / name).exists() for name in "abc")
