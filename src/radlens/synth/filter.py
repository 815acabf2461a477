"""The segmentation-agreement filter: which of a mask's generated candidates are kept.

MRGen generates 20 candidates per source mask, asks SAM2 (prompted with each structure's mask) to
segment every candidate, and keeps the 2 whose segmentation agrees best with the conditioning mask
(``synthesize_CHAOS_filter_multi.py``, ``filter_json``). Here a segmenter bundle (``radlens train
seg``) segments each candidate once; the agreement of a candidate is, per foreground label of the
conditioning mask, the Dice and IoU of the segmenter's output against that mask, and their mean over
those labels. The rule (MRGen's, with its constants as defaults) is:

1. Order the candidates by mean score (``metric``: IoU as MRGen, or Dice), best first (ties: the
   earlier candidate), and consider only the best ``shortlist`` (MRGen: 5; 0 = all).
2. Level 0: a candidate passes when its mean score reaches ``mean_threshold`` and every label's score
   reaches ``label_threshold``. If at least ``keep`` pass, keep the best ``keep``.
3. Otherwise relax: at level ``l`` (1 .. ``relax_levels``) both thresholds are lowered by
   ``l * relax_step`` and at most ``max(1, keep - l)`` candidates are kept ("keep fewer"). A level
   keeps its passing candidates when there are at least that many, or when it is the last level
   (then whatever passes, possibly none). MRGen has one level: below 2 passing at (IoU 0.7 per label,
   0.8 mean), it lowers both by 0.1 and keeps at most 1.

Two departures from the reference, both stricter: a label of the mask that the segmenter does not find
at all scores 0 and fails the label threshold (MRGen skips organs whose IoU is exactly 0, so a
structure that vanished passes); and SAM2's confidence thresholds have no counterpart (a segmenter's
agreement is the score).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from radlens.errors import ConfigError
from radlens.metrics.segmentation import dice_from_counts, iou_from_counts, overlap_counts

Metric = Literal["iou", "dice"]


@dataclass
class FilterConfig:
    """Thresholds of the segmentation-agreement filter and its relax-and-keep-fewer fallback.

    Attributes:
        metric: the agreement score the thresholds apply to: iou (MRGen) or dice (both are recorded).
        label_threshold: every foreground label of the conditioning mask must reach this score (MRGen: IoU 0.7).
        mean_threshold: the mean score over the mask's foreground labels must reach this (MRGen: IoU 0.8).
        shortlist: only the best this many candidates by mean score are considered (MRGen: 5; 0: all).
        relax_step: how much both thresholds drop per relaxation level.
        relax_levels: relaxation levels tried when too few candidates pass; level l keeps at most max(1, keep - l)
            (MRGen: 1 level, keeping 1 instead of 2).
    """

    metric: Metric = "iou"
    label_threshold: float = 0.7
    mean_threshold: float = 0.8
    shortlist: int = 5
    relax_step: float = 0.1
    relax_levels: int = 1

    def __post_init__(self) -> None:
        if self.metric not in ("iou", "dice"):
            raise ConfigError(f"filter.metric must be iou or dice, got {self.metric!r}")
        if self.shortlist < 0 or self.relax_levels < 0 or self.relax_step < 0:
            raise ConfigError("filter.shortlist, filter.relax_levels and filter.relax_step must be >= 0, got "
                              f"{self.shortlist}, {self.relax_levels} and {self.relax_step}")

    def thresholds(self, level: int) -> tuple[float, float]:
        """(label threshold, mean threshold) at relaxation ``level``."""
        drop = level * self.relax_step
        return round(self.label_threshold - drop, 6), round(self.mean_threshold - drop, 6)


@dataclass(frozen=True)
class Agreement:
    """How one candidate's segmentation agrees with its conditioning mask: per foreground label id
    present in the mask, Dice and IoU; their means over those labels."""

    dice: dict[int, float]
    iou: dict[int, float]

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else float("nan")

    @property
    def mean_iou(self) -> float:
        return float(np.mean(list(self.iou.values()))) if self.iou else float("nan")

    def scores(self, metric: Metric) -> dict[int, float]:
        return self.iou if metric == "iou" else self.dice

    def mean(self, metric: Metric) -> float:
        return self.mean_iou if metric == "iou" else self.mean_dice


def agreement(segmentation: np.ndarray, mask: np.ndarray) -> Agreement:
    """Dice and IoU per foreground label of ``mask`` between a segmentation and the mask ``(H, W)`` (label ids)."""
    ids = [int(i) for i in np.unique(mask) if i > 0]
    counts = overlap_counts(segmentation, mask, ids)
    dice, iou = dice_from_counts(counts), iou_from_counts(counts)
    return Agreement({i: float(d) for i, d in zip(ids, dice)}, {i: float(u) for i, u in zip(ids, iou)})


@dataclass(frozen=True)
class Selection:
    """What the filter kept of one mask's candidates: their indices, best first, and the relaxation level
    (None when nothing passed), with the thresholds of that level and the order it considered."""

    kept: tuple[int, ...]
    level: int | None
    thresholds: tuple[float, float] | None
    ranked: tuple[int, ...] = field(default=())


def passes(candidate: Agreement, metric: Metric, label_threshold: float, mean_threshold: float) -> bool:
    """Whether a candidate reaches both thresholds (every label, and the mean)."""
    scores = candidate.scores(metric)
    return bool(scores) and candidate.mean(metric) >= mean_threshold and min(scores.values()) >= label_threshold


def select(candidates: Sequence[Agreement], keep: int, cfg: FilterConfig) -> Selection:
    """Apply the filter rule of the module docstring to one mask's candidates."""
    if keep < 1:
        raise ConfigError(f"keep must be >= 1, got {keep}")
    means = [c.mean(cfg.metric) for c in candidates]
    ranked = sorted(range(len(candidates)), key=lambda i: (-np.nan_to_num(means[i], nan=-1.0), i))
    shortlist = ranked[: cfg.shortlist] if cfg.shortlist else ranked
    for level in range(cfg.relax_levels + 1):
        label_t, mean_t = cfg.thresholds(level)
        passing = [i for i in shortlist if passes(candidates[i], cfg.metric, label_t, mean_t)]
        quota = keep if level == 0 else max(1, keep - level)
        if len(passing) >= quota or level == cfg.relax_levels:
            chosen = tuple(passing[:quota])
            return Selection(chosen, level if chosen else None, (label_t, mean_t) if chosen else None, tuple(ranked))
    raise AssertionError("unreachable: the last level always returns")


def scores_json(candidate: Agreement, labels: Mapping[int, str]) -> dict[str, dict[str, float]]:
    """Per-label scores keyed by label name, for the records: ``{name: {"dice": d, "iou": u}}``."""
    return {labels.get(i, f"label_{i}"): {"dice": round(candidate.dice[i], 6), "iou": round(candidate.iou[i], 6)}
            for i in sorted(candidate.dice)}
