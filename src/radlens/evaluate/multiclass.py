"""Multi-class metrics with chance levels and patient-bootstrap CIs, and the confusion-matrix figure.

Metrics on (N,) true class indices and (N, C) class probabilities: accuracy, balanced accuracy
(mean per-class recall over the classes present, as sklearn's ``balanced_accuracy_score``), macro
one-vs-rest AUROC on the probabilities (as sklearn's ``roc_auc_score(multi_class="ovr")``),
per-class recall and AUROC, and the confusion matrix. Counted with numpy and
:func:`radlens.metrics.findings.score_metrics` rather than sklearn's scorers because the bootstrap
calls them ~1000 times and sklearn's input validation dominates at this size (the tests check
equality with sklearn).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc")
CLASS_METRICS = ("recall", "auroc")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, row = true class, column = predicted class (sklearn's ``confusion_matrix`` layout)."""
    flat = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Summary metrics, per-class recall/AUROC (NaN for a class absent from ``y_true``) and the confusion matrix.

    ``macro_auroc`` is the mean one-vs-rest AUROC over the classes that occur in ``y_true`` (and not
    alone: one-vs-rest needs both sides), as ``balanced_accuracy`` is the mean recall over the classes
    that occur; with every class present both equal sklearn's. NaN when no class has both sides.
    """
    from radlens.metrics.findings import score_metrics

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    n_classes = p.shape[1]
    cm = confusion_counts(y, p.argmax(axis=1), n_classes)
    support = cm.sum(axis=1)
    recall = np.full(n_classes, np.nan)
    np.divide(np.diag(cm), support, out=recall, where=support > 0)
    auroc = np.array([score_metrics(y == c, p[:, c])["auroc"] for c in range(n_classes)])
    return {
        "accuracy": float(np.trace(cm) / len(y)),
        "balanced_accuracy": float(np.nanmean(recall)),
        "macro_auroc": float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan"),
        "recall": recall,
        "auroc": auroc,
        "confusion": cm,
    }


def _value(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def evaluate_classes(
    y_true: np.ndarray,
    probs: np.ndarray,
    patients: np.ndarray,
    classes: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """metrics.json content: summary and per-class metrics, chance levels, confusion matrix, bootstrap CIs.

    Chance levels: accuracy -> the majority-class rate (always predicting the commonest class),
    balanced accuracy and per-class recall -> 1 / n_classes, AUROC -> 0.5. CIs resample patients
    with replacement (:func:`radlens.metrics.findings.patient_resamples`); a resample lacking a
    class gives no value for that class's metrics, and its balanced accuracy and macro AUROC are
    over the classes it has; ``n`` says how many resamples each interval rests on. ``over`` names
    the classes the macro means are taken over, ``left_out`` the classes without a case (and why),
    ``notes`` says in words what is thin (:mod:`radlens.metrics.explain`).
    """
    from radlens.metrics.explain import ci_note, join_notes, left_out_note, split_notes
    from radlens.metrics.findings import patient_resamples, percentile_ci

    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    point = class_metrics(y, p)
    boot: dict[str, list[float]] = {m: [] for m in SUMMARY_METRICS}
    per_class: list[dict[str, list[float]]] = [{m: [] for m in CLASS_METRICS} for _ in classes]
    for idx in patient_resamples(patients, n_bootstrap, seed):
        sample = class_metrics(y[idx], p[idx])
        for m in SUMMARY_METRICS:
            if np.isfinite(sample[m]):
                boot[m].append(sample[m])
        for c, values in enumerate(per_class):
            for m in CLASS_METRICS:
                if np.isfinite(sample[m][c]):
                    values[m].append(sample[m][c])
    support = point["confusion"].sum(axis=1)
    chance = 1.0 / len(classes)
    cis = {m: percentile_ci(np.asarray(boot[m]), level) for m in SUMMARY_METRICS}
    left_out = {name: f"no case among {len(y)}" for name, n in zip(classes, support) if n == 0}
    n_patients = int(len(np.unique(patients)))
    notes = join_notes(
        [left_out_note(left_out, len(classes), "classes")],
        split_notes(n_patients, len(y), "item"),
        [ci_note(m.replace("_", " "), cis[m], n_bootstrap, "a resample without two classes") for m in SUMMARY_METRICS],
    )
    return {
        **{m: _value(point[m]) for m in SUMMARY_METRICS},
        "ci": cis,
        "over": [name for name, n in zip(classes, support) if n > 0],
        "left_out": left_out,
        "notes": notes,
        "chance": {"accuracy": float(support.max() / len(y)), "balanced_accuracy": chance,
                   "macro_auroc": 0.5, "recall": chance, "auroc": 0.5},
        "per_class": {
            name: {
                **{m: _value(point[m][c]) for m in CLASS_METRICS},
                "ci": {m: percentile_ci(np.asarray(per_class[c][m]), level) for m in CLASS_METRICS},
                "n": int(support[c]),
            }
            for c, name in enumerate(classes)
        },
        "confusion_matrix": {"classes": list(classes), "rows": "true", "columns": "predicted",
                             "counts": point["confusion"].tolist()},
        "bootstrap": {"unit": "patient", "n_requested": n_bootstrap, "seed": seed, "level": level,
                      "n_patients": n_patients},
    }


def confusion_figure(counts: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Write the row-normalised confusion matrix (true rows, predicted columns; counts in the cells) as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 1.2 + 0.7 * len(classes)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, list(classes), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, list(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
