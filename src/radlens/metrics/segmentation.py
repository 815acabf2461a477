"""Segmentation overlap metrics per label (Dice, IoU, optional HD95) and their patient-bootstrap summary.

Pure functions on integer label maps of one case (a 3D volume, or a 2D slice stack re-stacked per
series: Dice is computed over the whole case, as the reference evaluates 2D nnU-Net predictions in 3D).

Conventions, stated once:

- **Empty vs empty is 1.** A label absent from both the prediction and the truth of a case has Dice
  and IoU 1 (nothing to find, nothing found); absent from one of them only, 0. Means over cases
  therefore reward correctly predicting a structure's absence (e.g. no lesion in a lesion-free patient);
  ``cases_present`` says in how many cases the structure really is there.
- **HD95** (optional, MONAI's ``compute_hausdorff_distance`` with ``percentile=95``, in mm when the
  voxel spacing is given, else in voxels): 0 when the label is absent from both; undefined (NaN, written
  as null and left out of means) when it is absent from exactly one.
- A case's ``mean_dice`` is the mean Dice over the foreground labels (background excluded).
- Confidence intervals resample **patients** with replacement (all their cases together,
  :func:`radlens.metrics.findings.patient_resamples`); the statistic is the mean over the resampled
  cases, per label and of ``mean_dice``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.metrics.findings import patient_resamples, percentile_ci

if TYPE_CHECKING:
    import pandas as pd


def overlap_counts(pred: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``(len(labels), 3)`` int64: per label, voxels in both, in the prediction, in the truth."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the truth's {truth.shape}")
    out = np.zeros((len(labels), 3), dtype=np.int64)
    for i, label in enumerate(labels):
        p, t = pred == label, truth == label
        out[i] = (int(np.count_nonzero(p & t)), int(np.count_nonzero(p)), int(np.count_nonzero(t)))
    return out


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """Dice ``2|P∩T| / (|P| + |T|)`` per row of :func:`overlap_counts` (summed over cases for a global Dice); 1 where both are empty."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    both, total = counts[:, 0], counts[:, 1] + counts[:, 2]
    return np.divide(2 * both, total, out=np.ones(len(counts)), where=total > 0)


def iou_from_counts(counts: np.ndarray) -> np.ndarray:
    """IoU ``|P∩T| / |P∪T|`` per row of :func:`overlap_counts`; 1 where both are empty."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    union = counts[:, 1] + counts[:, 2] - counts[:, 0]
    return np.divide(counts[:, 0], union, out=np.ones(len(counts)), where=union > 0)


def hd95(pred: np.ndarray, truth: np.ndarray, label: int, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance of one label (mm with ``spacing``, else voxels):
    0 when absent from both, NaN when absent from one."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    p, t = np.asarray(pred) == label, np.asarray(truth) == label
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("nan")
    as_tensor = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None] for x in (p, t)]
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(*as_tensor, include_background=True, percentile=95,
                                           spacing=None if spacing is None else [float(s) for s in spacing])
    return float(value.reshape(-1)[0])


def case_metrics(pred: np.ndarray, truth: np.ndarray, labels: Mapping[int, str], spacing: Sequence[float] | None = None,
                 with_hd95: bool = False) -> dict[str, float]:
    """One case's row: ``dice:<name>``, ``iou:<name>``, ``voxels_true:<name>``, ``voxels_pred:<name>`` (and
    ``hd95:<name>``) per foreground label of ``labels`` (id -> name), and ``mean_dice`` over them."""
    ids = [i for i in sorted(labels) if i != 0]
    counts = overlap_counts(pred, truth, ids)
    dice, iou = dice_from_counts(counts), iou_from_counts(counts)
    row: dict[str, float] = {}
    for k, label in enumerate(ids):
        name = labels[label]
        row[f"dice:{name}"], row[f"iou:{name}"] = float(dice[k]), float(iou[k])
        row[f"voxels_true:{name}"], row[f"voxels_pred:{name}"] = int(counts[k, 2]), int(counts[k, 1])
        if with_hd95:
            row[f"hd95:{name}"] = hd95(pred, truth, label, spacing)
    row["mean_dice"] = float(dice.mean()) if ids else float("nan")
    return row


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarize(cases: pd.DataFrame, names: Sequence[str], n_bootstrap: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """metrics.json content from a per-case table of :func:`case_metrics` rows with a ``patient_id`` column.

    Per label (``names``: the foreground label names): mean Dice and IoU over cases with patient-bootstrap
    CIs, ``cases_present`` (cases where the truth has it), mean HD95 when the table has it; ``mean_dice``:
    the mean of the cases' ``mean_dice`` with its CI.
    """
    patients = cases["patient_id"].to_numpy()
    columns = [f"{m}:{n}" for n in names for m in ("dice", "iou")] + ["mean_dice"]
    values = cases[columns].to_numpy(dtype=np.float64)
    boot = np.array([[_mean(values[idx, j]) for j in range(len(columns))]
                     for idx in patient_resamples(patients, n_bootstrap, seed)]) if n_bootstrap > 0 else np.zeros((0, len(columns)))
    ci = {c: percentile_ci(boot[:, j][np.isfinite(boot[:, j])], level) for j, c in enumerate(columns)}
    per_label: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {
            "dice": _none(_mean(cases[f"dice:{name}"].to_numpy(np.float64))),
            "iou": _none(_mean(cases[f"iou:{name}"].to_numpy(np.float64))),
            "ci": {"dice": ci[f"dice:{name}"], "iou": ci[f"iou:{name}"]},
            "cases_present": int((cases[f"voxels_true:{name}"] > 0).sum()),
        }
        if f"hd95:{name}" in cases.columns:
            hd = cases[f"hd95:{name}"].to_numpy(np.float64)
            entry["hd95"] = _none(_mean(hd))
            entry["hd95_defined_cases"] = int(np.isfinite(hd).sum())
        per_label[name] = entry
    return {
        "per_label": per_label,
        "mean_dice": _none(_mean(cases["mean_dice"].to_numpy(np.float64))),
        "mean_dice_ci": ci["mean_dice"],
        "n_cases": int(len(cases)),
        "bootstrap": {"unit": "patient", "n_requested": n_bootstrap, "seed": seed, "level": level,
                      "n_patients": int(len(np.unique(patients)))},
        "conventions": {"empty_vs_empty": 1.0, "mean_dice": "mean over foreground labels per case, then over cases",
                        "hd95_absent_from_one": None},
    }
