"""Splits and folds by patient: no leakage, seeded, stratified, small data, existing splits."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from radlens.errors import ConfigError, InputError
from radlens.prepare.splits import SplitConfig, add_splits, assign_folds, assign_splits, patient_strata


def series_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """1-4 series per patient, a protocol label per series, 3 binary findings per series."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for s in range(int(rng.integers(1, 5))):
            rows.append({
                "patient_id": f"p{p:03d}",
                "series_id": f"p{p:03d}_s{s}",
                "label": int(rng.choice(4, p=[0.55, 0.25, 0.15, 0.05])),
                "Cardiomegaly": int(rng.random() < 0.3),
                "Emphysema": int(rng.random() < 0.1),
                "Lung nodule": int(rng.random() < 0.5),
            })
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # rows in no particular order


def assert_by_patient(table: pd.DataFrame, column: pd.Series) -> None:
    assert column.index.equals(table.index)
    assert column.groupby(table["patient_id"]).nunique().max() == 1


def test_no_patient_in_two_splits_and_ratios_hold() -> None:
    table = series_table()
    split = assign_splits(table, SplitConfig(), label_cols=["label"])
    assert_by_patient(table, split)
    per_patient = split.groupby(table["patient_id"]).first().value_counts()
    assert per_patient.to_dict() == {"train": 42, "validation": 9, "test": 9}


def test_seeded_deterministic_and_seed_matters() -> None:
    table = series_table()
    a = assign_splits(table, SplitConfig(seed=3))
    assert a.equals(assign_splits(table, SplitConfig(seed=3)))
    assert a.equals(assign_splits(table.iloc[::-1], SplitConfig(seed=3)).loc[table.index])  # row order irrelevant
    assert not a.equals(assign_splits(table, SplitConfig(seed=4)))


def test_stratified_by_most_common_label_spreads_every_label() -> None:
    table = series_table(n_patients=200)
    split = assign_splits(table, SplitConfig(seed=0), label_cols=["label"])
    strata = patient_strata(table, label_cols=["label"])
    per_patient = split.groupby(table["patient_id"]).first()
    share = pd.crosstab(strata, per_patient, normalize="index")
    # Every stratum is split close to 70/15/15; those with enough patients reach every split.
    assert (share["train"] - 0.7).abs().max() < 0.1
    large = strata.value_counts() >= 10
    assert (share.loc[large[large].index] > 0).all().all()


def test_multi_label_stratum_is_the_rarest_positive_finding() -> None:
    table = pd.DataFrame({
        "patient_id": ["a", "a", "b", "c", "d"],
        "Common": [1, 0, 1, 1, 0],
        "Rare": [0, 1, 0, 0, 0],
    })
    assert patient_strata(table, label_cols=["Common", "Rare"]).to_dict() == {
        "a": "Rare", "b": "Common", "c": "Common", "d": "none"
    }
    big = series_table(n_patients=100)
    split = assign_splits(big, SplitConfig(seed=2), label_cols=["Cardiomegaly", "Emphysema", "Lung nodule"])
    assert_by_patient(big, split)
    emphysema_patients = big.loc[big["Emphysema"] == 1, "patient_id"].unique()
    assert set(split[big["patient_id"].isin(emphysema_patients)]) == {"train", "validation", "test"}


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_small_datasets_get_every_split(n: int) -> None:
    table = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "label": [0] * n})
    split = assign_splits(table, SplitConfig(), label_cols=["label"])
    assert set(split) == {"train", "validation", "test"}
    assert (split == "train").sum() >= (split == "test").sum()


def test_zero_ratio_split_stays_empty() -> None:
    split = assign_splits(series_table(20), SplitConfig(ratios=(0.8, 0.2, 0.0)))
    assert set(split) == {"train", "validation"}


def test_keep_existing_split_honours_ctrate_style_values() -> None:
    table = pd.DataFrame({
        "patient_id": ["train_1", "train_1", "train_2", "valid_3", "new_4", "new_5", "new_6"],
        "split": ["train", "train", "train", "valid", None, None, None],
    })
    split = assign_splits(table, SplitConfig(keep_existing=True))
    assert split.iloc[:4].tolist() == ["train", "train", "train", "validation"]
    assert set(split.iloc[4:]) == {"train", "validation", "test"}
    conflicting = table.assign(split=["train", "valid", "train", "valid", None, None, None])
    with pytest.raises(InputError, match="train_1"):
        assign_splits(conflicting, SplitConfig(keep_existing=True))


def test_folds_by_patient_stratified_and_seeded() -> None:
    table = series_table(n_patients=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scikit-learn: a label rarer than k
        folds = assign_folds(table, 5, seed=0, label_col="label")
        assert folds.equals(assign_folds(table, 5, seed=0, label_col="label"))
    assert_by_patient(table, folds)
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    patients_per_fold = folds.groupby(table["patient_id"]).first().value_counts()
    assert patients_per_fold.min() >= 9
    unstratified = assign_folds(table, 5, seed=0)
    assert_by_patient(table, unstratified)
    with pytest.raises(ConfigError):
        assign_folds(table.head(3), 5)


def test_add_splits_adds_split_and_fold_columns() -> None:
    table = series_table(n_patients=20)
    out = add_splits(table, SplitConfig(folds=4, stratify=False))
    assert {"split", "fold"} <= set(out.columns) and "split" not in table
    assert set(out["fold"]) == {0, 1, 2, 3}
    assert (add_splits(table)["fold"] == -1).all()


def test_bad_configs_and_tables() -> None:
    for kwargs in (dict(ratios=(0.5, 0.5, 0.5)), dict(ratios=(1.2, -0.1, -0.1)), dict(folds=1)):
        with pytest.raises(ConfigError):
            SplitConfig(**kwargs)
    with pytest.raises(ConfigError):
        assign_splits(pd.DataFrame({"subject": ["a"]}))
    with pytest.raises(InputError, match="patient_id"):
        assign_splits(pd.DataFrame({"patient_id": ["a", None]}))
