"""Metrics of generated images: FID on given features, cosine similarities, and patient-bootstrap means.

- **FID** (MONAI's ``FIDMetric``): the Fréchet distance between Gaussians fitted to two sets of
  feature vectors ``(N, D)``. The features must come from a named encoder recorded with the number:
  Inception features, the usual choice, mean little for MRI. With fewer images than feature dimensions
  the covariances are singular and FID is biased upwards; :func:`fid` says how many of each it used.
- **Cosine similarity** of L2-normalised embeddings, paired (row ``i`` with row ``i``) or against a set's
  mean direction (CLIP image-image and image-text similarity, as MRGen's CLIP score).
- **Patient-bootstrap mean**: the mean of per-item values with a 95% interval that resamples patients
  (all their items together), as every radlens CI does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radlens.metrics.findings import patient_resamples, percentile_ci


def fid(generated: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """FID between generated and real feature vectors ``(N, D)`` (float64), with the counts it rests on."""
    import torch
    from monai.metrics import FIDMetric

    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(f"FID needs two (N, D) feature sets of one width, got {generated.shape} and {real.shape}")
    if len(generated) < 2 or len(real) < 2:
        raise ValueError(f"FID needs at least 2 images on each side, got {len(generated)} and {len(real)}")
    value = FIDMetric()(torch.from_numpy(generated), torch.from_numpy(real))
    dim = int(generated.shape[1])
    return {"fid": float(value), "n_generated": int(len(generated)), "n_real": int(len(real)), "feature_dim": dim,
            "full_rank": bool(min(len(generated), len(real)) > dim)}


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` arrays (rows need not be normalised)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have one shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(axis=1), norms, out=np.zeros(len(a)), where=norms > 0)


def centroid_cosine(a: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the mean direction of ``reference`` ``(M, D)``."""
    centre = np.asarray(reference, np.float64).mean(axis=0, keepdims=True)
    return paired_cosine(np.asarray(a, np.float64), np.repeat(centre, len(a), axis=0))


def bootstrap_mean(values: np.ndarray, patients: np.ndarray, n_bootstrap: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict[str, Any]:
    """``{"mean", "ci": {low, high, n}, "n", "n_patients"}`` of per-item ``values`` (NaN left out), the CI by
    resampling ``patients`` (the patient of each item)."""
    values, patients = np.asarray(values, np.float64), np.asarray(patients)
    keep = np.isfinite(values)
    values, patients = values[keep], patients[keep]
    if len(values) == 0:
        return {"mean": None, "ci": percentile_ci(np.zeros(0), level), "n": 0, "n_patients": 0}
    boot = np.array([values[idx].mean() for idx in patient_resamples(patients, n_bootstrap, seed)]) if n_bootstrap else np.zeros(0)
    return {"mean": float(values.mean()), "ci": percentile_ci(boot, level), "n": int(len(values)),
            "n_patients": int(len(np.unique(patients)))}
