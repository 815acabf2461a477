"""Re-windowing prepared CT values to HU windows (lung, mediastinum, bone, ...).

A prepared CT array holds HU clipped to the card's ``config.intensity.ct_window`` ``[lo, hi]`` and
mapped by its ``ct_output`` (``0,1``, ``-1,1`` or ``hu/1000``; :mod:`radlens.prepare.intensity`).
That map is linear and invertible inside ``[lo, hi]``, so any window ``[a, b]`` with
``lo <= a < b <= hi`` can be cut from the stored values: ``clip((HU - a) / (b - a), 0, 1)``, one
output in [0, 1] per window. A window reaching outside ``[lo, hi]`` cannot (the stored values
saturate there) and is refused. MRI has no HU: its stored values are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radlens.errors import ConfigError

# Common CT windows (HU), for documentation and configs: [low, high] = level -/+ width / 2.
NAMED_WINDOWS = {
    "lung": (-1350.0, 150.0),
    "mediastinum": (-160.0, 240.0),
    "abdomen": (-150.0, 250.0),
    "bone": (-500.0, 1300.0),
    "brain": (0.0, 80.0),
}


def _at(where: str | Path) -> str:
    return f"{where}: " if str(where) else ""


def stored_to_hu(card: dict[str, Any], where: str | Path = "") -> tuple[float, float, tuple[float, float]]:
    """``(scale, offset, (lo, hi))``: stored values ``v`` hold ``HU = scale * v + offset`` inside the
    stored window ``[lo, hi]``; ConfigError unless the card describes CT windowing."""
    if card.get("modality") != "CT":
        raise ConfigError(f"{_at(where)}HU windows need a CT dataset; this one is {card.get('modality')!r} "
                          "(MRI and mixed datasets are used as stored: leave data.windows empty)")
    intensity = (card.get("config") or {}).get("intensity") or {}
    if "ct_window" not in intensity or "ct_output" not in intensity:
        raise ConfigError(f"{_at(where)}the dataset card does not say how HU were stored (config.intensity.ct_window/ct_output)")
    lo, hi = (float(x) for x in intensity["ct_window"])
    output = intensity["ct_output"]
    if output == "hu/1000":
        return 1000.0, 0.0, (lo, hi)
    if output == "0,1":
        return hi - lo, lo, (lo, hi)
    if output == "-1,1":
        return (hi - lo) / 2.0, (lo + hi) / 2.0, (lo, hi)
    raise ConfigError(f"{_at(where)}unknown ct_output {output!r} in the dataset card")


def window_coefficients(card: dict[str, Any], windows: Sequence[Sequence[float]], where: str | Path = "") -> np.ndarray:
    """``(W, 2)`` float32 ``(alpha, beta)`` per window: ``out = clip(alpha * stored + beta, 0, 1)``.

    ConfigError for a window with ``low >= high`` or reaching outside the stored HU range."""
    scale, offset, (lo, hi) = stored_to_hu(card, where)
    coefficients = []
    for window in windows:
        if len(window) != 2 or not window[0] < window[1]:
            raise ConfigError(f"data.windows: each window is [low, high] HU with low < high, got {list(window)}")
        a, b = float(window[0]), float(window[1])
        if a < lo or b > hi:
            raise ConfigError(f"{_at(where)}window [{a:g}, {b:g}] HU reaches outside the stored range [{lo:g}, {hi:g}] HU "
                              "(values there were clipped when the dataset was prepared); choose a window inside it or "
                              "prepare the dataset with a wider intensity.ct_window")
        coefficients.append((scale / (b - a), (offset - a) / (b - a)))
    return np.asarray(coefficients, dtype=np.float32).reshape(-1, 2)


def apply_windows(stored: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Stored values ``(*shape)`` as ``(W, *shape)`` float32 windows in [0, 1]."""
    values = np.asarray(stored, dtype=np.float32)[None]
    alpha = coefficients[:, 0].reshape(-1, *(1,) * (values.ndim - 1))
    beta = coefficients[:, 1].reshape(-1, *(1,) * (values.ndim - 1))
    return np.clip(alpha * values + beta, 0.0, 1.0).astype(np.float32, copy=False)
