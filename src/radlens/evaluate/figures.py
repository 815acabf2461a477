"""ROC and precision-recall figures: one small panel per finding, AUROC/AUPRC and chance level in each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 5)
    return math.ceil(n / cols), cols


def curve_figures(labels: np.ndarray, scores: np.ndarray, findings: Sequence[str], folder: Path) -> list[Path]:
    """Write ``roc.png`` and ``pr.png`` for (N, F) labels/scores into ``folder``; return the paths.

    A finding with one class in ``labels`` gets an empty panel that says so.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    from radlens.metrics.findings import score_metrics

    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    rows, cols = _grid(len(findings))
    paths = []
    for kind in ("roc", "pr"):
        fig = Figure(figsize=(3 * cols, 3 * rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        for ax in axes.flat[len(findings) :]:
            ax.axis("off")
        for f, (name, ax) in enumerate(zip(findings, axes.flat)):
            y, s = labels[:, f], scores[:, f]
            ax.set_title(name, fontsize=8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            if y.min() == y.max():
                ax.text(0.5, 0.5, "one class only", ha="center", va="center", fontsize=8)
                continue
            if kind == "roc":
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, lw=1.2, label=f"AUROC {auc(fpr, tpr):.3f}")
                ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
                ax.set_xlabel("1 - specificity", fontsize=7)
                ax.set_ylabel("sensitivity", fontsize=7)
            else:
                precision, recall, _ = precision_recall_curve(y, s)
                ax.step(recall, precision, where="post", lw=1.2, label=f"AUPRC {score_metrics(y, s)['auprc']:.3f}")
                ax.axhline(y.mean(), ls="--", lw=0.8, color="grey")
                ax.set_xlabel("recall", fontsize=7)
                ax.set_ylabel("precision", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "upper right")
        fig.suptitle("ROC curves" if kind == "roc" else "Precision-recall curves")
        fig.tight_layout()
        path = Path(folder) / f"{kind}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths
