"""Linear probes on cached image embeddings, and finding metrics from per-item scores.

:func:`logistic_probe` fits one scikit-learn ``LogisticRegression`` per finding
(``class_weight="balanced"``, on standardised features) on training embeddings; thresholds are
chosen on validation and metrics come from :mod:`radlens.metrics.findings` on the test split,
per scan with patient-bootstrap CIs (:func:`radlens.metrics.findings.finding_results`, the scoring
step of every model that gives per-item scores: ClassFine, the report labeller).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError
from radlens.metrics.findings import ThresholdMethod

if TYPE_CHECKING:
    import pandas as pd


def fit_logistic(train_emb: np.ndarray, train_y: np.ndarray, C: float = 1.0, max_iter: int = 2000) -> list[Any]:
    """One fitted pipeline (scaler + balanced logistic regression) per column of ``train_y``.

    A finding with one class in training cannot be fitted: its entry is that class (0 or 1),
    which :func:`predict_logistic` turns into a constant score.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models: list[Any] = []
    for f in range(train_y.shape[1]):
        y = np.asarray(train_y[:, f]).astype(int)
        if y.min() == y.max():
            models.append(int(y[0]))
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter))
        models.append(clf.fit(train_emb, y))
    return models


def predict_logistic(models: Sequence[Any], emb: np.ndarray) -> np.ndarray:
    """(N, F) probabilities of the positive class."""
    cols = [np.full(len(emb), float(m)) if isinstance(m, int) else m.predict_proba(emb)[:, 1] for m in models]
    return np.stack(cols, axis=1)


def logistic_probe(
    train_emb: np.ndarray,
    train_y: np.ndarray,
    val_emb: np.ndarray,
    val_y: np.ndarray,
    test_emb: np.ndarray,
    test_y: np.ndarray,
    test_patients: np.ndarray | None = None,
    findings: Sequence[str] | None = None,
    *,
    C: float = 1.0,
    max_iter: int = 2000,
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-finding logistic probes; metrics.json content (see :func:`radlens.metrics.findings.evaluate_findings`).

    Rows are items (one per scan); ``test_patients`` (default: every row its own patient) drive
    the bootstrap. Thresholds are chosen on the validation scores, never on test.
    """
    from radlens.metrics.findings import evaluate_findings

    train_y, val_y, test_y = (np.asarray(y).reshape(len(y), -1) for y in (train_y, val_y, test_y))
    names = list(findings) if findings is not None else [f"finding_{i}" for i in range(train_y.shape[1])]
    models = fit_logistic(train_emb, train_y, C, max_iter)
    val_s, test_s = predict_logistic(models, val_emb), predict_logistic(models, test_emb)
    patients = np.arange(len(test_y)) if test_patients is None else np.asarray(test_patients)
    metrics = evaluate_findings(test_y, test_s, patients, val_y, val_s, names, threshold_method, n_bootstrap=n_bootstrap, seed=seed)
    metrics["probe"] = {"kind": "logistic", "C": C, "constant": [n for n, m in zip(names, models) if isinstance(m, int)]}
    return metrics


def _series_embeddings(folder: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Embeddings folder (``radlens embed``) -> one L2-normalised row per series (2D: mean of its slices)."""
    import pandas as pd

    from radlens.evaluate.embed import EMBEDDINGS, IDS

    for name in (EMBEDDINGS, IDS):
        if not (folder / name).is_file():
            raise InputError(folder, f"not an embeddings folder (no {name}; run `radlens embed`)")
    emb = np.load(folder / EMBEDDINGS, mmap_mode="r")
    ids = pd.read_parquet(folder / IDS)
    if len(ids) != len(emb) or "series_id" not in ids.columns:
        raise InputError(folder, f"{IDS} ({len(ids)} rows) does not describe {EMBEDDINGS} ({len(emb)} rows)")
    codes, series = pd.factorize(ids["series_id"])
    pooled = np.zeros((len(series), emb.shape[1]), dtype=np.float64)
    np.add.at(pooled, codes, np.asarray(emb, dtype=np.float64))
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32), pd.DataFrame({"series_id": series})


def evaluate_probe(
    embeddings: str,
    prepared: str,
    out: str,
    findings: list[str] | None = None,
    C: float = 1.0,
    max_iter: int = 2000,
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> int:
    """Logistic-regression probe per finding on cached embeddings (``radlens embed``) of a prepared dataset.

    Trains on the train split, chooses thresholds on validation, reports test metrics per scan
    (OUT/metrics.json, OUT/predictions.csv, OUT/run.json). Labels come from PREPARED's series table.
    A rerun replaces the files radlens wrote in OUT, nothing else.

    Args:
        embeddings: an embeddings folder written by ``radlens embed``.
        prepared: the prepared dataset folder the embeddings were made from (its labels and splits).
        out: output folder.
        findings: probe only these findings (default: every finding of the dataset card).
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: solver iterations per finding.
        threshold_method: youden (max TPR - FPR) or f1 (max F1 of the positive class), chosen on validation.
        n_bootstrap: bootstrap resamples for the 95% CIs.
        seed: bootstrap seed.
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
    """
    from radlens.common.atomic import check_output
    from radlens.common.runinfo import run_info, write_results
    from radlens.data.labelled import require_splits, select_findings, targets_of
    from radlens.io.prepared import PreparedDataset
    from radlens.metrics.explain import macro_line
    from radlens.metrics.findings import finding_results, scan_scores

    check_output(out, overwrite)
    ds = PreparedDataset(prepared)
    names = select_findings(ds.card, findings, ds.path / "dataset.json")
    emb, ids = _series_embeddings(Path(embeddings))
    series = ds.series.set_index("series_id")
    unknown = ids.loc[~ids["series_id"].isin(series.index), "series_id"]
    if len(unknown):
        raise InputError(embeddings, f"{len(unknown)} embedded series are not in {prepared} (e.g. {unknown.iloc[0]!r})")
    table = series.loc[ids["series_id"]].reset_index()
    require_splits(table, ("train", "validation", "test"), embeddings)
    y = targets_of(table, names, ds.path)
    masks = {s: (table["split"] == s).to_numpy() for s in ("train", "validation", "test")}
    models = fit_logistic(emb[masks["train"]], y[masks["train"]], C, max_iter)
    scans = {s: scan_scores(table[masks[s]].reset_index(drop=True), y[masks[s]], predict_logistic(models, emb[masks[s]]), names)
             for s in ("validation", "test")}
    metrics, predictions = finding_results(scans["validation"], scans["test"], names, threshold_method, n_bootstrap, seed)
    metrics["probe"] = {"kind": "logistic", "C": C, "n_train": int(masks["train"].sum()),
                        "constant": [n for n, m in zip(names, models) if isinstance(m, int)]}
    config = {"embeddings": embeddings, "prepared": prepared, "findings": names, "C": C, "max_iter": max_iter,
              "threshold_method": threshold_method, "n_bootstrap": n_bootstrap}
    write_results(out, metrics, predictions, run_info("evaluate probe", config, seed), overwrite)
    print(f"logistic probe on test: {macro_line(metrics)} -> {out}")
    return 0
