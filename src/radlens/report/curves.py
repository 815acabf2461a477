"""Training-curve figures from the CSV logs Lightning writes (``metrics.csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path, keys: Sequence[str] | None = None) -> Path:
    """Plot every logged metric (or those of ``keys`` that were logged) against the step, one panel each.

    Lightning's CSVLogger writes one row per logging call with empty cells for metrics not
    logged at that step, so each metric is plotted from its own non-empty rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    if "step" not in frame.columns:
        raise ValueError(f"{metrics_csv}: not a Lightning metrics.csv (no 'step' column)")
    logged = [c for c in frame.columns if c not in ("step", "epoch") and frame[c].notna().any()]
    names = [k for k in keys if k in logged] if keys else logged
    if not names:
        raise ValueError(f"{metrics_csv}: no metrics logged")
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = frame[["step", name]].dropna()
        ax.plot(rows["step"], rows[name], marker="." if len(rows) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
