"""The segmentation-agreement filter: scores against the conditioning mask, and MRGen's relax-and-keep-fewer rule."""

from __future__ import annotations

import numpy as np
import pytest

from radlens.errors import ConfigError
from radlens.synth.filter import Agreement, FilterConfig, agreement, passes, scores_json, select


def cand(*ious: float) -> Agreement:
    """A candidate with these per-label IoUs (labels 1, 2, ...) and Dice = 2u / (1 + u)."""
    return Agreement({i + 1: 2 * u / (1 + u) for i, u in enumerate(ious)}, {i + 1: u for i, u in enumerate(ious)})


def test_agreement_scores_every_label_of_the_mask_and_only_those() -> None:
    mask = np.zeros((8, 8), np.int64)
    mask[:4, :4] = 1  # 16 pixels
    mask[4:, 4:] = 2  # 16 pixels
    seg = np.zeros_like(mask)
    seg[:4, :2] = 1  # half of label 1 found
    seg[0, 7] = 3  # a label the mask lacks: not scored
    a = agreement(seg, mask)
    assert a.iou == {1: 0.5, 2: 0.0} and a.dice == pytest.approx({1: 2 / 3, 2: 0.0})
    assert a.mean_iou == 0.25 and a.mean_dice == pytest.approx(1 / 3)
    assert scores_json(a, {1: "GM", 2: "WM"}) == {"GM": {"dice": 0.666667, "iou": 0.5}, "WM": {"dice": 0.0, "iou": 0.0}}


def test_a_candidate_passes_when_every_label_and_the_mean_reach_the_thresholds() -> None:
    assert passes(cand(0.75, 0.9), "iou", 0.7, 0.8)
    assert not passes(cand(0.65, 0.99), "iou", 0.7, 0.8)  # one label below, mean above
    assert not passes(cand(0.75, 0.75), "iou", 0.7, 0.8)  # every label above, mean below
    assert not passes(cand(0.0, 1.0), "iou", 0.0 + 1e-9, 0.4)  # a structure that vanished fails (MRGen skipped IoU 0)
    assert passes(cand(0.75, 0.75), "dice", 0.7, 0.8)  # Dice 0.857 each


def test_enough_passing_keeps_the_best_k_by_mean_score() -> None:
    cands = [cand(0.85, 0.85), cand(0.95, 0.95), cand(0.5, 0.5), cand(0.9, 0.9), cand(0.85, 0.85)]
    chosen = select(cands, 2, FilterConfig())
    assert chosen.kept == (1, 3) and chosen.level == 0 and chosen.thresholds == (0.7, 0.8)
    assert chosen.ranked == (1, 3, 0, 4, 2)  # by mean IoU, ties (0 and 4) to the earlier candidate
    assert select([cand(0.8, 0.9), cand(0.9, 0.8)], 1, FilterConfig()).kept == (0,)


def test_too_few_passing_relaxes_once_and_keeps_one_as_mrgen() -> None:
    # Only one passes at (0.7, 0.8): MRGen lowers both by 0.1 and keeps the best one.
    one = [cand(0.9, 0.9), cand(0.72, 0.75), cand(0.3, 0.3)]
    chosen = select(one, 2, FilterConfig())
    assert chosen.kept == (0,) and chosen.level == 1 and chosen.thresholds == (0.6, 0.7)
    # None passes at level 0, one at level 1 (0.6 per label, 0.7 mean).
    assert select([cand(0.65, 0.78), cand(0.5, 0.99)], 2, FilterConfig()).kept == (0,)
    # None passes even relaxed: nothing kept, no level.
    nothing = select([cand(0.4, 0.4), cand(0.55, 0.95)], 2, FilterConfig())
    assert nothing.kept == () and nothing.level is None and nothing.thresholds is None


def test_only_the_shortlist_is_considered() -> None:
    # Five candidates with a high mean but one weak label, then one that would pass: MRGen looks at the best 5 only.
    weak = [cand(0.5, 1.0, 1.0) for _ in range(5)]
    good = cand(0.75, 0.8, 0.85)
    assert select([*weak, good], 1, FilterConfig()).kept == ()
    assert select([*weak, good], 1, FilterConfig(shortlist=0)).kept == (5,)


def test_more_levels_keep_fewer_at_each_level() -> None:
    cfg = FilterConfig(relax_levels=3, relax_step=0.1)
    # k = 3: level 0 needs 3, level 1 keeps up to 2, level 2 up to 1, level 3 (last) whatever passes up to 1.
    cands = [cand(0.82, 0.82), cand(0.76, 0.76), cand(0.66, 0.66), cand(0.1, 0.1)]
    chosen = select(cands, 3, cfg)
    assert chosen.level == 1 and chosen.kept == (0, 1)  # level 1 (0.6, 0.7) lets through 0 and 1: quota 2 met
    assert select([cand(0.62, 0.62), cand(0.1, 0.1)], 3, cfg).kept == (0,)  # only at level 2 (0.5, 0.6)
    chosen = select([cand(0.45, 0.57)], 3, cfg)
    assert chosen.level == 3 and chosen.kept == (0,) and chosen.thresholds == (0.4, 0.5)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="filter.metric"):
        FilterConfig(metric="hd95")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be >= 0"):
        FilterConfig(relax_levels=-1)
    with pytest.raises(ConfigError, match="keep must be >= 1"):
        select([cand(1.0)], 0, FilterConfig())
