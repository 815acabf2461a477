"""Generation metrics: FID against the closed form, cosine similarities, patient-bootstrap means."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from radlens.metrics.generation import bootstrap_mean, centroid_cosine, fid, paired_cosine


def test_fid_is_the_frechet_distance_of_the_fitted_gaussians() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (200, 4)), rng.normal(0.5, 2, (150, 4))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real))
    result = fid(a, b)
    assert result["fid"] == pytest.approx(expected, rel=1e-4)
    assert result == {**result, "n_generated": 200, "n_real": 150, "feature_dim": 4, "full_rank": True}
    assert fid(a, a)["fid"] == pytest.approx(0.0, abs=1e-6)
    assert not fid(a[:3], b[:3])["full_rank"]
    with pytest.raises(ValueError, match="one width"):
        fid(a, b[:, :3])


def test_cosines_paired_and_to_a_set_centre() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert paired_cosine(a, b).tolist() == [1.0, 0.0, 0.0]  # a zero vector has similarity 0
    assert centroid_cosine(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx([1.0])


def test_bootstrap_mean_resamples_patients_and_skips_nan() -> None:
    values = np.array([1.0, 1.0, 0.0, np.nan])
    patients = np.array(["p1", "p1", "p2", "p3"])
    out = bootstrap_mean(values, patients, n_bootstrap=200, seed=0)
    assert out["mean"] == pytest.approx(2 / 3) and out["n"] == 3 and out["n_patients"] == 2
    assert out["ci"]["low"] == 0.0 and out["ci"]["high"] == 1.0 and out["ci"]["n"] == 200  # either patient alone
    assert bootstrap_mean(np.array([np.nan]), np.array(["p"]))["mean"] is None
