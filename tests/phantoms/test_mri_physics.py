"""MR signal equations and protocol sampling of the MRI phantom."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radlens.phantoms.mri_physics import (
    FAMILIES,
    Protocol,
    inversion_recovery,
    null_inversion_time,
    relaxation,
    sample_protocol,
    spin_echo,
    spoiled_gradient_echo,
    tissue_signals,
)


@pytest.mark.parametrize("field", [1.5, 3.0])
def test_csf_is_bright_on_t2w_and_dark_on_t1w_and_flair(field: float) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        t2 = tissue_signals(sample_protocol("T2_FSE", field, rng))
        assert t2["CSF"] > t2["GM"] > t2["WM"]
        for family in ("T1_SE", "T1_GRE3D", "MPRAGE"):
            t1 = tissue_signals(sample_protocol(family, field, rng))
            assert t1["CSF"] < t1["GM"] < t1["WM"], family
        flair = tissue_signals(sample_protocol("FLAIR", field, rng))
        assert flair["CSF"] < 0.5 * flair["WM"]
        assert flair["lesion"] > max(flair["GM"], flair["WM"])


def test_stir_nulls_fat() -> None:
    rng = np.random.default_rng(1)
    signals = tissue_signals(sample_protocol("STIR", 3.0, rng))
    assert signals["fat"] < 0.1 * signals["WM"]


def test_longer_echo_time_lowers_signal() -> None:
    t1, t2, t2s, pd = relaxation(3.0, "GM")
    assert spin_echo(pd, t1, t2, 100.0, 3000.0) < spin_echo(pd, t1, t2, 20.0, 3000.0)
    assert spoiled_gradient_echo(pd, t1, t2s, 30.0, 500.0, 20.0) < spoiled_gradient_echo(pd, t1, t2s, 5.0, 500.0, 20.0)
    assert inversion_recovery(pd, t1, t2, 120.0, 9000.0, 2500.0) < inversion_recovery(pd, t1, t2, 80.0, 9000.0, 2500.0)


def test_longer_repetition_time_raises_spin_echo_signal() -> None:
    t1, t2, _, pd = relaxation(1.5, "WM")
    assert spin_echo(pd, t1, t2, 15.0, 3000.0) > spin_echo(pd, t1, t2, 15.0, 500.0)


@pytest.mark.parametrize("tissue", ["WM", "GM", "CSF", "fat"])
def test_inversion_at_t1_ln2_nulls_the_tissue(tissue: str) -> None:
    t1, t2, _, pd = relaxation(3.0, tissue)
    # With TR >> T1 the null point is T1 ln 2.
    assert inversion_recovery(pd, t1, t2, 10.0, 1e7, t1 * math.log(2)) == pytest.approx(0.0, abs=1e-9)
    # At a clinical TR the exact null time still zeroes it, and T1 ln 2 no longer does exactly.
    tr = 2.0 * t1
    assert inversion_recovery(pd, t1, t2, 10.0, tr, null_inversion_time(t1, tr)) == pytest.approx(0.0, abs=1e-9)
    assert inversion_recovery(pd, t1, t2, 10.0, tr, t1 * math.log(2)) > 0.01


def test_sampled_parameters_stay_in_clinical_ranges_and_spread_over_mrclip_bins() -> None:
    rng = np.random.default_rng(2)
    protocols: list[Protocol] = [sample_protocol(f, b, rng) for _ in range(40) for f in FAMILIES for b in (1.5, 3.0)]
    for p in protocols:
        spec = FAMILIES[p.family]
        assert spec.te[0] <= p.te <= spec.te[1] and spec.tr[0] <= p.tr <= spec.tr[1]
        assert spec.flip[0] <= p.flip <= spec.flip[1]
        assert (p.ti is None) == (spec.null_tissue is None and spec.ti is None)
    te_bins = {min(int(p.te / 10.0), 19) for p in protocols}  # MR-CLIP: 20 bins over 0-0.2 s
    tr_bins = {min(int(p.tr / 500.0), 19) for p in protocols}  # 20 bins over 0-10 s
    assert len(te_bins) >= 12 and len(tr_bins) >= 15
    assert all(p.te < 200.0 and p.tr <= 10000.0 for p in protocols)


def test_sampling_is_deterministic_for_a_seed() -> None:
    a = [sample_protocol(f, 3.0, np.random.default_rng(5)) for f in FAMILIES]
    b = [sample_protocol(f, 3.0, np.random.default_rng(5)) for f in FAMILIES]
    assert a == b
