"""The cohort of ``radlens train mil``: bags, labels, the fixed test set and the patient folds, checked.

Inputs:

- ``bags``: a ``bags.csv`` (``radlens extract bags``' index: ``path, patient_id[, study_id, series_id,
  n, split]`` + label columns; ``path`` relative to the table's folder) or a folder holding one;
- ``labels`` (optional): a clinical CSV in CLEAR's shape, ``image,label1,label2,...`` with one row per
  patient (``image`` = the patient id; a ``patient_id`` column is read the same way). Without it the
  labels are ``bags.csv``'s own label columns (``label_columns``, or every column that is not an id).

Label values are 0, 1 or empty (not known for that patient or bag; left out of its loss and metrics).

The unit a label belongs to is the unit evaluated: with a clinical CSV a *patient* (all of a patient's
bags carry its labels in training; a patient's score is the mean over its bags), with ``bags.csv``'s
labels a *bag*. Either way folds and bootstrap resamples are by patient.

Label rows and bags must match: a clinical CSV naming patients that have no bag is refused (the
extraction is incomplete or the ids differ: training on the rest would silently change the cohort);
bags whose patient has no label row are skipped, each listed in ``OUT/failures.csv`` and counted on
the console (feature extraction typically covers more studies than one endpoint has labels for).

Folds: patients outside the test split are assigned to k folds by iterative stratification
(:func:`radlens.prepare.splits.iterative_folds`, Sechidis et al. 2011, at the patient level): the
positives and the negatives of every label are spread over the folds at once, rarest class first,
so each fold validates on both classes of every label. Every label therefore needs at least k
positive and k negative patients outside the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.prepare.splits import iterative_folds

if TYPE_CHECKING:
    import pandas as pd

BAG_TABLES = ("bags.csv", "bags.parquet")
# Columns of bags.csv that are never labels.
# ``label``: a prepared dataset's protocol class id (several classes, not a 0/1 endpoint).
ID_COLUMNS = frozenset({"path", "patient_id", "study_id", "series_id", "scan_id", "n", "split", "fold", "dataset",
                        "encoder", "encoder_hash", "file", "case_id", "role", "label", "z_mm_note"})
CLINICAL_IDS = ("image", "patient_id")


@dataclass
class Cohort:
    """Every usable bag, one row each: ``file`` (absolute), ``path`` (as in bags.csv), ``patient_id``,
    ``case_id`` (the evaluated unit), ``role`` (``cv`` or ``test``), ``fold`` (-1 for test), the labels
    (float, NaN = not known)."""

    table: pd.DataFrame
    labels: list[str]
    bags_file: Path
    label_file: Path
    unit: str  # "patient" or "bag"
    skipped: pd.DataFrame  # bags left out (path, stage, reason): OUT/failures.csv
    notes: list[str] = field(default_factory=list)

    @property
    def cv(self) -> pd.DataFrame:
        return self.table[self.table["role"] == "cv"]

    @property
    def test(self) -> pd.DataFrame:
        return self.table[self.table["role"] == "test"]


def find_bags_table(bags: str | Path) -> Path:
    """``bags`` itself (a file) or the ``bags.csv``/``bags.parquet`` in the folder ``bags``."""
    path = Path(bags)
    if path.is_dir():
        for name in BAG_TABLES:
            if (path / name).is_file():
                return path / name
        raise InputError(path, f"no {' or '.join(BAG_TABLES)} in this folder (run `radlens extract bags`)")
    if not path.is_file():
        raise InputError(path, "bag table not found")
    return path


def _read(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad table, named
        raise InputError(path, f"cannot read the table: {err}") from err


def _binary(frame: pd.DataFrame, columns: list[str], where: Path, id_column: str) -> pd.DataFrame:
    """``columns`` as float 0/1 with NaN for empty cells; InputError naming the first other value."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for col in columns:
        column = frame[col].astype(int) if frame[col].dtype == bool else frame[col]
        text = column.astype(str).str.strip()
        empty = frame[col].isna() | text.isin(["", "nan", "NaN", "NA", "None"])
        number = pd.to_numeric(text.where(~empty), errors="coerce")
        bad = ~empty & ~number.isin([0.0, 1.0])
        if bad.any():
            row = frame.index[bad.to_numpy()][0]
            raise InputError(where, f"label {col!r} has value {frame.at[row, col]!r} for {id_column} "
                                    f"{frame.at[row, id_column]!r}: labels must be 0, 1 or empty "
                                    f"({int(bad.sum())} such cell(s))")
        out[col] = number.where(~empty).astype(float)
    return out


def read_bags(bags: str | Path) -> tuple[Path, pd.DataFrame]:
    """The bag table with ``file`` (absolute feature file path), ids as text; duplicate bags refused."""
    path = find_bags_table(bags)
    table = _read(path)
    missing = [c for c in ("path", "patient_id") if c not in table.columns]
    if missing:
        raise InputError(path, f"no column(s) {missing} (columns: {', '.join(map(str, table.columns))})")
    if len(table) == 0:
        raise InputError(path, "the bag table has no rows")
    table = table.reset_index(drop=True)
    for col in ("path", "patient_id"):
        table[col] = table[col].astype(str).str.strip()
        if (table[col] == "").any():
            raise InputError(path, f"{int((table[col] == '').sum())} row(s) have an empty {col!r}")
    duplicated = table["path"][table["path"].duplicated()]
    if len(duplicated):
        raise InputError(path, f"{len(duplicated)} duplicate bag row(s), e.g. {duplicated.iloc[0]!r}")
    table["file"] = [str(p if Path(p).is_absolute() else (path.parent / p).resolve()) for p in table["path"]]
    return path, table


def read_clinical(labels: str | Path, label_columns: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """A clinical CSV as ``patient_id`` + float label columns (NaN = empty); duplicates and non-0/1 refused."""
    path = Path(labels)
    if not path.is_file():
        raise InputError(path, "clinical label table not found")
    frame = _read(path)
    id_col = next((c for c in CLINICAL_IDS if c in frame.columns), None)
    if id_col is None:
        raise InputError(path, f"no patient id column ({' or '.join(CLINICAL_IDS)}); CLEAR's shape is image,label1,...")
    frame[id_col] = frame[id_col].astype(str).str.strip()
    if (frame[id_col] == "").any():
        raise InputError(path, f"{int((frame[id_col] == '').sum())} row(s) have an empty {id_col!r}")
    dup = frame[id_col][frame[id_col].duplicated()].unique()
    if len(dup):
        raise InputError(path, f"{len(dup)} patient(s) have more than one row, e.g. {', '.join(map(repr, dup[:5]))}")
    columns = _label_columns(frame, label_columns, {id_col}, path)
    out = _binary(frame, columns, path, id_col)
    out.insert(0, "patient_id", frame[id_col])
    return out, columns


def _label_columns(frame: pd.DataFrame, wanted: list[str] | None, exclude: set[str], where: Path) -> list[str]:
    if wanted:
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise InputError(where, f"no label column(s) {missing} (columns: {', '.join(map(str, frame.columns))})")
        if len(set(wanted)) != len(wanted):
            raise ConfigError(f"label_columns names a column twice: {wanted}")
        return list(wanted)
    columns = [str(c) for c in frame.columns if c not in exclude]
    if not columns:
        raise InputError(where, "no label columns (pass label_columns, or a clinical CSV image,label1,...)")
    return columns


def build_cohort(bags: str | Path, labels: str | Path | None, label_columns: list[str] | None, folds: int,
                 test_split: str | None, seed: int) -> Cohort:
    """Read, join and check bags and labels, mark the fixed test set and assign patient folds."""
    import pandas as pd

    bags_file, table = read_bags(bags)
    skipped = pd.DataFrame(columns=["path", "stage", "reason"])
    if labels is not None:
        label_file = Path(labels)
        clinical, columns = read_clinical(label_file, label_columns)
        clash = [c for c in columns if c in table.columns]
        table = table.drop(columns=clash)
        unlabelled = ~table["patient_id"].isin(clinical["patient_id"])
        no_bag = sorted(set(clinical["patient_id"]) - set(table["patient_id"]))
        if no_bag:
            raise InputError(label_file, f"{len(no_bag)} patient(s) have labels but no bag in {bags_file}, e.g. "
                                         f"{', '.join(map(repr, no_bag[:5]))} (the extraction is incomplete or the "
                                         "ids differ)")
        skipped = pd.DataFrame({"path": table.loc[unlabelled, "file"], "stage": "labels",
                                "reason": [f"patient {p!r} has no row in {label_file}" for p in table.loc[unlabelled, "patient_id"]]})
        table = table[~unlabelled].merge(clinical, on="patient_id", how="left")
        table["case_id"] = table["patient_id"]
        unit = "patient"
    else:
        label_file = bags_file
        columns = _label_columns(table, label_columns, set(ID_COLUMNS) | {c for c in table.columns if c.startswith("_")},
                                 bags_file)
        table[columns] = _binary(table, columns, bags_file, "path")
        table["case_id"] = table["path"]
        unit = "bag"
    if len(table) == 0:
        raise InputError(label_file, f"no bag of {bags_file} has a label row")
    table = table.reset_index(drop=True)
    table["role"] = _roles(table, test_split, bags_file)
    cohort = Cohort(table, columns, bags_file, label_file, unit, skipped)
    _check_classes(cohort, folds)
    cohort.table["fold"] = -1
    cv = cohort.table["role"] == "cv"
    cohort.table.loc[cv, "fold"] = iterative_folds(cohort.table[cv].reset_index(drop=True), folds, seed, "patient_id",
                                                   columns).to_numpy()
    cohort.notes += _fold_gaps(cohort, folds)
    return cohort


def _roles(table: pd.DataFrame, test_split: str | None, where: Path) -> np.ndarray:
    """``test`` for the bags of split ``test_split`` (when the table has that split), else ``cv``."""
    if test_split is None or "split" not in table.columns or not (table["split"] == test_split).any():
        return np.full(len(table), "cv", dtype=object)
    is_test = (table["split"] == test_split).to_numpy()
    mixed = table.groupby("patient_id")["split"].agg(lambda s: (s == test_split).any() and (s != test_split).any())
    if mixed.any():
        raise InputError(where, f"{int(mixed.sum())} patient(s) have bags in the {test_split!r} split and in others, "
                                f"e.g. {mixed[mixed].index[0]!r}: a test patient must be held out entirely")
    return np.where(is_test, "test", "cv").astype(object)


def patient_labels(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per patient: 1 if any of its bags is positive, 0 if it has known labels and none positive, NaN otherwise."""
    grouped = table.groupby("patient_id")[columns]
    return grouped.max()  # max skips NaN; all-NaN stays NaN


def _check_classes(cohort: Cohort, folds: int) -> None:
    """InputError when a label has fewer positive or negative patients outside the test set than folds."""
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    per_patient = patient_labels(cohort.cv, cohort.labels)
    if len(per_patient) < folds:
        raise InputError(cohort.label_file, f"{len(per_patient)} patient(s) outside the test split, fewer than "
                                            f"folds={folds}")
    for col in cohort.labels:
        pos, neg = int((per_patient[col] == 1).sum()), int((per_patient[col] == 0).sum())
        if min(pos, neg) < folds:
            raise InputError(cohort.label_file, f"label {col!r} has {pos} positive and {neg} negative patient(s) "
                                                f"outside the test split: each class needs at least folds={folds} "
                                                "(use fewer folds, or leave the label out with label_columns)")


def _fold_gaps(cohort: Cohort, folds: int) -> list[str]:
    """A note for every fold whose validation patients lack a class of some label (its AUROC is undefined)."""
    notes = []
    cv = cohort.cv
    for k in range(folds):
        per_patient = patient_labels(cv[cv["fold"] == k], cohort.labels)
        for col in cohort.labels:
            if not ((per_patient[col] == 1).any() and (per_patient[col] == 0).any()):
                notes.append(f"fold {k}: validation patients have one class of {col!r} (its AUROC is undefined there)")
    return notes


def check_folds_file(path: Path, cohort: Cohort) -> None:
    """On resume: the fold of every patient must be the one recorded in ``folds.csv``."""
    import pandas as pd

    try:
        recorded = pd.read_csv(path, dtype={"patient_id": str})
    except Exception as err:  # noqa: BLE001
        raise InputError(path, f"cannot read the recorded folds: {err}") from err
    now = fold_table(cohort)
    merged = now.merge(recorded, on="patient_id", how="outer", suffixes=("", "_recorded"), indicator=True)
    if (merged["_merge"] != "both").any() or (merged["fold"] != merged["fold_recorded"]).any():
        raise ConfigError(f"{path} records other patients or folds than this run would use: resume with the same "
                          "bags, labels, folds, test_split and seed, or choose a new OUT folder")


def fold_table(cohort: Cohort) -> pd.DataFrame:
    """``patient_id, role, fold`` (one row per patient; fold -1 for the fixed test set)."""
    return (cohort.table.groupby("patient_id", sort=True)[["role", "fold"]].first().reset_index()
            .astype({"fold": "int64"}))
