"""Train/validation/test splits and k-fold assignment, always by patient.

MR-CLIP and M3D split by volume, so one patient's scans land in training and test. Here every
row of a patient gets the same split and the same fold.

Stratification (so each split sees every kind of data):

- one label column: a patient's stratum is its most common label (ties: the smallest);
- several binary columns (e.g. CT-RATE's 18 findings): a patient is positive for a finding if
  any of its rows is; its stratum is its *rarest* positive finding (fewest positive patients
  over the dataset), ``none`` without any. Rare findings, the ones a split most easily misses,
  are thus spread first; this is the simple first step of iterative stratification.

Split assignment walks the patients grouped by stratum (shuffled within each, seeded) and
gives each one the split furthest below its target share. This keeps every stratum close to
the ratios and the result deterministic. With at least as many patients as non-zero ratios,
every such split gets a patient. Folds use scikit-learn's ``StratifiedGroupKFold`` (with labels)
or ``GroupKFold`` (without); :func:`iterative_folds` balances every class of several 0/1 labels at once
(full iterative stratification, for multi-label cross-validation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")
# Spellings of existing split columns (CT-RATE: "train"/"valid").
SPLIT_ALIASES = {"train": "train", "training": "train", "valid": "validation", "val": "validation",
                 "validation": "validation", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class SplitConfig:
    """Split ratios (train, validation, test), seed, stratification and k-fold; always by patient.

    Attributes:
        ratios: fractions of patients in train, validation and test (summing to 1).
        seed: seed of the patient shuffle.
        stratify: balance the splits by each patient's labels (findings or protocol labels) where there are.
        folds: cross-validation folds assigned as the fold column (0: none, fold -1).
        keep_existing: rows whose existing_col holds a split (train, valid/val/validation, test) keep it;
            only patients without one are assigned.
        existing_col: the column read by keep_existing.
    """

    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    stratify: bool = True
    folds: int = 0
    keep_existing: bool = False
    existing_col: str = "split"

    def __post_init__(self) -> None:
        if len(self.ratios) != 3 or min(self.ratios) < 0 or abs(sum(self.ratios) - 1.0) > 1e-6:
            raise ConfigError(f"split ratios must be 3 non-negative numbers summing to 1, got {self.ratios}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"folds must be 0 (none) or >= 2, got {self.folds}")


def patient_strata(
    table: pd.DataFrame, patient_col: str = "patient_id", label_cols: Sequence[str] | None = None
) -> pd.Series:
    """One stratum (a string) per patient, indexed by patient id (see the module docstring)."""
    import pandas as pd

    _require(table, list(label_cols or []))
    ids = _patient_ids(table, patient_col)
    patients = pd.Index(sorted(ids.unique()), name=patient_col)
    if not label_cols:
        return pd.Series("all", index=patients, name="stratum")
    if len(label_cols) == 1:
        return table[label_cols[0]].astype(str).groupby(ids).agg(_mode).reindex(patients).rename("stratum")
    positive = table[list(label_cols)].fillna(0).astype(float).gt(0).groupby(ids).any().reindex(patients)
    rarity = positive.sum(axis=0).sort_values(kind="stable")
    ordered = positive[rarity.index]
    first = ordered.to_numpy().argmax(axis=1)
    strata = np.where(ordered.to_numpy().any(axis=1), np.asarray(rarity.index, dtype=str)[first], "none")
    return pd.Series(strata, index=patients, name="stratum")


def assign_splits(
    table: pd.DataFrame,
    cfg: SplitConfig = SplitConfig(),
    patient_col: str = "patient_id",
    label_cols: Sequence[str] | None = None,
) -> pd.Series:
    """``train``/``validation``/``test`` for every row, by patient (see the module docstring)."""
    import pandas as pd

    ids = _patient_ids(table, patient_col)
    fixed = _existing(table, cfg, ids) if cfg.keep_existing else pd.Series(dtype=str)
    strata = patient_strata(table, patient_col, label_cols if cfg.stratify else None)
    free = strata.drop(fixed.index)
    rng = np.random.default_rng(cfg.seed)
    order = [p for _, group in free.groupby(free, sort=True) for p in rng.permutation(group.index.to_numpy())]
    chosen = _allocate(len(order), cfg.ratios)
    assigned = pd.concat([fixed, pd.Series([SPLITS[k] for k in chosen], index=pd.Index(order, dtype=str))])
    return ids.map(assigned).rename("split")


def assign_folds(
    table: pd.DataFrame,
    k: int,
    seed: int = 0,
    patient_col: str = "patient_id",
    label_col: str | Sequence[str] | None = None,
) -> pd.Series:
    """Fold 0..k-1 for every row, by patient, stratified by the patient's stratum when labels are given."""
    import pandas as pd
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    label_cols = [label_col] if isinstance(label_col, str) else list(label_col or [])
    strata = patient_strata(table, patient_col, label_cols)
    if not 2 <= k <= len(strata):
        raise ConfigError(f"k-fold needs 2 <= k <= number of patients ({len(strata)}), got k={k}")
    # One row per patient: folds are assigned to patients, then copied to their rows.
    patients = strata.index.to_numpy()
    if label_cols:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        parts = splitter.split(patients, strata.to_numpy(), groups=patients)
    else:
        parts = GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(patients, groups=patients)
    fold_of = pd.Series(-1, index=strata.index, dtype="int64")
    for fold, (_, test_idx) in enumerate(parts):
        fold_of.iloc[test_idx] = fold
    return _patient_ids(table, patient_col).map(fold_of).astype("int64").rename("fold")


def iterative_folds(
    table: pd.DataFrame, k: int, seed: int = 0, patient_col: str = "patient_id", label_cols: Sequence[str] = ()
) -> pd.Series:
    """Fold 0..k-1 for every row, by patient, by iterative stratification over several 0/1 labels.

    Sechidis, Tsoumakas & Vlahavas (2011), at the patient level: a patient is positive for a label
    if any of its rows is, negative if it has known (non-NaN) values and none positive; each label's
    positives *and* negatives are the classes spread. Repeatedly, the class with the fewest
    patients left is dealt out, each of its patients going to the fold that wants that class most
    (ties: the fold that wants the most patients, then a seeded random one). Every fold thus gets
    ``floor(n/k)`` or more of every class of every label with ``n`` patients, where stratifying on
    one stratum per patient balances only that stratum. Patients without any known label fill the
    emptiest folds.
    """
    import pandas as pd

    _require(table, list(label_cols))
    ids = _patient_ids(table, patient_col)
    values = table[list(label_cols)].apply(pd.to_numeric, errors="coerce").groupby(ids)
    patients = values.max().index
    if not 2 <= k <= len(patients):
        raise ConfigError(f"k-fold needs 2 <= k <= number of patients ({len(patients)}), got k={k}")
    positive = values.max().to_numpy() > 0
    negative = (values.max().to_numpy() == 0)
    classes = np.concatenate([positive, negative], axis=1)  # (P, 2L)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    wanted = np.tile(classes.sum(0) / k, (k, 1))
    wanted_total = np.full(k, len(patients) / k)
    fold = np.full(len(patients), -1, dtype=np.int64)

    def deal(p: int, column: int | None) -> None:
        score = wanted_total if column is None else wanted[:, column]
        best = np.flatnonzero(score == score.max())
        if column is not None and len(best) > 1:
            best = best[wanted_total[best] == wanted_total[best].max()]
        f = int(rng.choice(best))
        fold[p] = f
        wanted[f] -= classes[p]
        wanted_total[f] -= 1

    while (fold < 0).any():
        left = classes[fold < 0].sum(0)
        if not left.any():
            for p in order[fold[order] < 0]:
                deal(int(p), None)
            break
        rarest = np.flatnonzero(left == left[left > 0].min())
        column = int(rng.choice(rarest[left[rarest] > 0]))
        for p in order[(fold[order] < 0) & classes[order, column]]:
            deal(int(p), column)
    fold_of = pd.Series(fold, index=patients.astype(str))
    return ids.map(fold_of).astype("int64").rename("fold")


def add_splits(
    table: pd.DataFrame,
    cfg: SplitConfig = SplitConfig(),
    patient_col: str = "patient_id",
    label_cols: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A copy of ``table`` with ``split`` and ``fold`` (-1 when ``cfg.folds`` is 0) columns."""
    out = table.copy()
    out["split"] = assign_splits(table, cfg, patient_col, label_cols)
    if cfg.folds:
        stratify_on = list(label_cols or []) if cfg.stratify else None
        out["fold"] = assign_folds(table, cfg.folds, cfg.seed, patient_col, stratify_on)
    else:
        out["fold"] = -1
    return out


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split index for each of ``n`` items in order: the split furthest below its target so far.

    Hand-written because scikit-learn's splitters fail on strata with a single member, which
    small medical datasets always have.
    """
    counts = np.zeros(3)
    target = np.asarray(ratios, dtype=float)
    chosen = []
    for i in range(n):
        k = int(np.argmax(target * (i + 1) - counts))
        counts[k] += 1
        chosen.append(k)
    # Small n: make every split with a non-zero ratio non-empty, taking from the largest split.
    wanted = np.flatnonzero(target > 0)
    if n >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                donor = int(np.argmax(counts))
                last = max(i for i, c in enumerate(chosen) if c == donor)
                chosen[last] = int(k)
                counts[donor] -= 1
                counts[k] += 1
    return chosen


def _existing(table: pd.DataFrame, cfg: SplitConfig, ids: pd.Series) -> pd.Series:
    """Patient -> split from ``cfg.existing_col`` for patients that have one; conflicts are errors."""
    _require(table, [cfg.existing_col])
    values = table[cfg.existing_col].map(lambda v: SPLIT_ALIASES.get(v.strip().lower()) if isinstance(v, str) else None)
    known = values.dropna()
    per_patient = known.groupby(ids[known.index]).unique()
    conflicting = [p for p, splits in per_patient.items() if len(splits) > 1]
    if conflicting:
        raise InputError(None, f"patients in more than one existing split ({cfg.existing_col!r}): {conflicting[:5]}")
    # A patient with some rows unassigned takes the split its other rows have.
    return per_patient.map(lambda s: s[0]).astype(str)


def _mode(values: pd.Series) -> str:
    """Most common value; ties go to the smallest, so the result does not depend on row order."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def _patient_ids(table: pd.DataFrame, patient_col: str) -> pd.Series:
    _require(table, [patient_col])
    if table[patient_col].isna().any():
        raise InputError(None, f"{int(table[patient_col].isna().sum())} row(s) have no {patient_col!r}")
    return table[patient_col].astype(str)


def _require(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(f"table lacks column(s) {missing}")
