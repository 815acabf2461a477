"""PNG montages of generated phantoms, so a person can look at what was made."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def save_montage(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    masks: Sequence[np.ndarray | None] | None = None,
    columns: int = 4,
    vrange: Sequence[tuple[float, float] | None] | None = None,
) -> Path:
    """Write a grid of 2D grey images with titles; masks, when given, are outlined in colour.

    ``images[i]`` is ``(rows, cols)`` in display orientation. ``vrange[i]`` fixes the grey
    window (e.g. a CT lung window); otherwise each image uses its 1st-99th percentile.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("save_montage needs at least one image")
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = axes.ravel()[i]
        window = vrange[i] if vrange is not None and vrange[i] is not None else None
        lo, hi = window if window is not None else np.percentile(image, [1, 99])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        mask = masks[i] if masks is not None else None
        if mask is not None and np.any(mask):
            ax.contour(np.asarray(mask) > 0, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
