"""``radlens train mil``: MIL heads over bags of slice embeddings, patient-level stratified k-fold CV.

Output folder::

    OUT/
      config.yaml, run.json   the command's options; radlens version, seed, head config, cohort facts
      folds.csv               patient_id, role (cv/test), fold (-1: the fixed test set)
      failures.csv            bags skipped (their patient has no label row), when there are any
      fold-K/                 a run folder (radlens.train.run): checkpoints, logs, best/ (the best
                              validation epoch's weights, with this fold's thresholds), last/,
                              predictions.csv (its validation patients and the test set)
      predictions.csv         every fold's rows and the ensemble's (fold = "ensemble")
      attention.csv           patient_id, case_id, path, file, split, fold, row (in the bag file),
                              slice_index, weight
      attention.png           the top-attended slices of a few patients (see mil_figure)
      metrics.json            per fold, mean +- sd over folds, test per fold and for the ensemble

Each fold trains a freshly initialised head (built from the head config with the fold's own seed,
``seed + fold``; the digest of its initial weights is in ``fold-K/run.json``) on the other folds'
patients and keeps the best epoch by its validation patients (``trainer.monitor``, default
``val/loss``). Thresholds come from the fold's validation patients; the fixed test set (bags of
split ``test_split``) is scored by every fold with that fold's thresholds and by the ensemble (the
mean of the folds' probabilities) with thresholds chosen on the pooled out-of-fold validation
scores. AUROC/AUPRC are on scores; 95% CIs resample patients. Validation metrics are AUROC/AUPRC
only: the fold's epoch was chosen on those patients, and a threshold chosen on them cannot be
judged on them. See :mod:`radlens.train.mil_data` for inputs, labels, stratification and skips.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError
from radlens.metrics.findings import METRICS, SCORE_METRICS, ThresholdMethod
from radlens.train.config import OptimConfig, TrainerConfig, as_dict

if TYPE_CHECKING:
    import pandas as pd

    from radlens.data.bags import BagDataset
    from radlens.train.mil_data import Cohort

# The defaults of ``radlens train mil`` (instances, so that ``--trainer.max_steps 50`` keeps the rest of them).
MIL_OPTIM = OptimConfig(lr=1e-3, weight_decay=1e-4, warmup_steps=10)
MIL_TRAINER = TrainerConfig(max_steps=300, val_every_n_steps=25, checkpoint_every_n_steps=100)


def train_mil(
    bags: str,
    out: str,
    labels: str | None = None,
    head: str = "abmil",
    head_options: dict[str, Any] | None = None,
    label_columns: list[str] | None = None,
    folds: int = 5,
    test_split: str | None = "test",
    optim: OptimConfig = MIL_OPTIM,
    trainer: TrainerConfig = MIL_TRAINER,
    batch_size: int = 8,
    max_instances: int | None = None,
    num_workers: int = 0,
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Cross-validate a MIL head on bags of slice embeddings; returns the output folder.

    Args:
        bags: ``bags.csv`` (``radlens extract bags``' index) or the folder holding it.
        out: the output folder (folds, per-fold runs, metrics, predictions, attention).
        labels: clinical CSV ``image,label1,label2,...`` (one row per patient, ``image`` = patient id);
            without it, ``bags.csv``'s label columns.
        head: ``mean``, ``abmil``, ``gated_abmil``, ``pma`` (or ``mean_mil``, ``pma_mil``), a registry
            name or a JSON config of a MIL head kind.
        head_options: constructor arguments of the head (e.g. ``{"hidden": 64, "dropout": 0.25}``).
        label_columns: the labels to learn (default: every label column).
        folds: k of the patient-level stratified k-fold cross-validation.
        test_split: bags of this ``split`` in ``bags.csv`` form a fixed held-out test set (None: none).
        optim: AdamW + warm-up/cosine (default: lr 1e-3, weight decay 1e-4, 10 warm-up steps).
        trainer: steps per fold, validation interval (the best of these validations is kept), devices,
            monitor (``val/loss`` or ``val/mean_auroc``). Default: 300 steps, validation every 25.
        batch_size: bags per training batch (padded to the longest, masked).
        max_instances: at most this many slices per bag (random per epoch in training, evenly spaced
            in evaluation); None: whole bags.
        num_workers: data loader workers.
        threshold_method: ``youden`` or ``f1``, on validation scores.
        n_bootstrap: patient-bootstrap resamples for the 95% CIs.
        seed: folds, per-fold initialisation (``seed + fold``), batch order.
        resume: ``latest`` continues an interrupted run: finished folds are reused, an interrupted
            one continues from its last checkpoint.
    """
    from radlens.common.atomic import write_csv_atomic
    from radlens.data.bags import BagDataset
    from radlens.train.config import validate
    from radlens.train.mil_data import build_cohort, check_folds_file, fold_table
    from radlens.train.mil_task import MilTask, head_config
    from radlens.train.run import choose_monitor, write_run_config

    optim, trainer = replace(optim or MIL_OPTIM), replace(trainer or MIL_TRAINER)
    validate(optim, trainer, [(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}"),
                              (folds >= 2, f"folds must be >= 2, got {folds}"),
                              (n_bootstrap >= 0, f"n_bootstrap must be >= 0, got {n_bootstrap}"),
                              (num_workers >= 0, f"num_workers must be >= 0, got {num_workers}"),
                              (resume in (None, "latest"), f"resume must be 'latest' (or unset), got {resume!r}"),
                              (threshold_method in ("youden", "f1"), "threshold_method must be youden or f1"),
                              (trainer.val_every_n_steps <= trainer.max_steps,
                               f"trainer.val_every_n_steps ({trainer.val_every_n_steps}) must be <= trainer.max_steps "
                               f"({trainer.max_steps}): each fold's best epoch is chosen by validation")])
    choose_monitor(MilTask, trainer)
    out_dir = Path(out)
    if resume is None and (out_dir / "folds.csv").exists():
        raise ConfigError(f"{out_dir} already holds a MIL run: pass --resume latest to continue it, or choose a new OUT")

    cohort = build_cohort(bags, labels, label_columns, folds, test_split, seed)
    smallest = min(int((cohort.cv["fold"] != k).sum()) for k in range(folds))
    if smallest < batch_size:
        raise ConfigError(f"batch_size {batch_size} is larger than the {smallest} training bags of a fold: lower it")
    # Every feature file is checked before any training: non-empty, one width, one encoder.
    everything = BagDataset(cohort.table, "file", cohort.labels, max_instances=max_instances, target_kind="binary",
                            allow_missing=True)
    head_cfg = head_config(head, head_options, everything.dim, len(cohort.labels))
    config = {"bags": bags, "labels": labels, "out": out, "head": head, "head_options": head_options,
              "label_columns": label_columns, "folds": folds, "test_split": test_split, "optim": as_dict(optim),
              "trainer": as_dict(trainer), "batch_size": batch_size, "max_instances": max_instances,
              "num_workers": num_workers, "threshold_method": threshold_method, "n_bootstrap": n_bootstrap,
              "seed": seed, "resume": resume}
    if (out_dir / "folds.csv").exists():
        check_folds_file(out_dir / "folds.csv", cohort)
    else:
        write_csv_atomic(out_dir / "folds.csv", fold_table(cohort))
    if len(cohort.skipped):
        write_csv_atomic(out_dir / "failures.csv", cohort.skipped)
        print(f"train mil: skipped {len(cohort.skipped)} bag(s) whose patient has no row in {cohort.label_file} "
              f"(listed in {out_dir / 'failures.csv'})")
    facts = {"head_config": head_cfg, "labels": cohort.labels, "unit": cohort.unit,
             "features": {"dim": everything.dim, "attrs": everything.attrs}, "skipped_bags": len(cohort.skipped)}
    write_run_config(out_dir, config, seed, **facts)

    test_set = (BagDataset(cohort.test, "file", cohort.labels, max_instances=max_instances, target_kind="binary",
                           allow_missing=True) if len(cohort.test) else None)
    fold_runs = [_fold(cohort, k, head_cfg, optim, trainer, config, test_set, batch_size, max_instances, num_workers,
                       threshold_method, seed, resume, out_dir) for k in range(folds)]
    if any(r is None for r in fold_runs):  # not rank 0 of a multi-process run
        return out_dir
    _finish(cohort, fold_runs, everything.attrs, threshold_method, n_bootstrap, seed, out_dir)  # type: ignore[arg-type]
    return out_dir


def _fold(cohort: Cohort, k: int, head_cfg: dict[str, Any], optim: OptimConfig, trainer: TrainerConfig,
          config: dict[str, Any], test_set: BagDataset | None, batch_size: int, max_instances: int | None,
          num_workers: int, threshold_method: ThresholdMethod, seed: int, resume: str | None,
          out_dir: Path) -> dict[str, Any] | None:
    """Train (or, on resume, reuse) fold ``k``; its predictions and attention, or None off rank 0."""
    import lightning.pytorch as pl
    import pandas as pd

    from radlens.common.atomic import write_csv_atomic
    from radlens.data.modules import BagDataModule
    from radlens.models.bundle import load_model
    from radlens.models.components import weights_digest
    from radlens.train.mil_task import MilTask, fresh_head, known_positive_weights, predict_bags
    from radlens.train.multilabel import device_of
    from radlens.train.run import CHECKPOINTS, LAST, run

    fold_dir, fold_seed = out_dir / f"fold-{k}", seed + k
    cv = cohort.cv
    datamodule = BagDataModule(cv[cv["fold"] != k], cv[cv["fold"] == k], cohort.labels, batch_size,
                               num_workers=num_workers, feature_column="file", max_instances=max_instances,
                               target_kind="binary", seed=fold_seed, allow_missing=True)
    assert datamodule.val_set is not None
    device = device_of()
    found: dict[str, Any] = {}

    def score(model: Any) -> dict[str, Any]:
        parts = [("validation", datamodule.val_set)] + ([("test", test_set)] if test_set is not None else [])
        for split, dataset in parts:
            found[split] = predict_bags(model, dataset, batch_size, device)
        val = _cases(datamodule.val_set.table, found["validation"][0], cohort.labels)
        found["thresholds"] = _thresholds(val, cohort.labels, threshold_method)
        return {"mil": {"labels": cohort.labels, "thresholds": found["thresholds"], "threshold_method": threshold_method,
                        "fold": k, "unit": cohort.unit}}

    done = resume is not None and (fold_dir / "predictions.csv").is_file() and (fold_dir / "best").is_dir()
    if done:
        score(load_model(fold_dir / "best", kind=head_cfg["kind"]))
    else:
        pl.seed_everything(fold_seed, workers=True, verbose=False)
        model = fresh_head(head_cfg, fold_seed)
        task = MilTask(model, known_positive_weights(datamodule.train_set.targets), optim)
        facts = {"fold": k, "fold_seed": fold_seed, "init_weights_sha256": weights_digest(model),
                 "labels": cohort.labels, "n_train_bags": len(datamodule.train_set),
                 "n_validation_bags": len(datamodule.val_set), "n_validation_patients": int(cv[cv["fold"] == k]["patient_id"].nunique())}
        fold_resume = "latest" if resume and (fold_dir / CHECKPOINTS / LAST).is_file() else None
        result = run(task, datamodule, trainer, fold_dir, fold_resume, config, fold_seed, facts,
                     lambda fitted: score(fitted.model))
        if not result.is_global_zero:
            return None
    predictions = []
    for split, dataset in [("validation", datamodule.val_set), ("test", test_set)]:
        if dataset is not None:
            cases = _cases(dataset.table, found[split][0], cohort.labels)
            predictions.append(cases.assign(split=split, fold=str(k)))
    table = _with_predictions(pd.concat(predictions, ignore_index=True), found["thresholds"], cohort.labels)
    write_csv_atomic(fold_dir / "predictions.csv", table)
    return {"fold": k, "found": found, "val_table": datamodule.val_set.table, "predictions": table}


def _cases(table: pd.DataFrame, scores: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One row per evaluated case (``case_id``): ``patient_id``, labels, ``score:<label>`` (mean over its bags)."""
    import pandas as pd

    frame = pd.concat([table[["case_id", "patient_id"]].reset_index(drop=True),
                       table[labels].reset_index(drop=True).astype(float),
                       pd.DataFrame(scores, columns=[f"score:{c}" for c in labels])], axis=1)
    grouped = frame.groupby("case_id", sort=False)
    out = grouped[[*labels, *[f"score:{c}" for c in labels]]].mean()
    out.insert(0, "patient_id", grouped["patient_id"].first())
    return out.reset_index()


def _known(cases: pd.DataFrame, label: str) -> pd.DataFrame:
    return cases[cases[label].notna()]


def _thresholds(val: pd.DataFrame, labels: list[str], method: ThresholdMethod) -> dict[str, float]:
    """Per label, the threshold chosen on the validation cases where it is known (0.5 with one class)."""
    from radlens.metrics.findings import validation_thresholds

    return {c: validation_thresholds(_known(val, c), [c], method)[c] for c in labels}


def _with_predictions(cases: pd.DataFrame, thresholds: dict[str, float], labels: list[str]) -> pd.DataFrame:
    out = cases.copy()
    for c in labels:
        out[f"pred:{c}"] = (out[f"score:{c}"] >= thresholds[c]).astype(int)
    return out


def evaluate_cases(cases: pd.DataFrame, reference: pd.DataFrame, labels: list[str], method: ThresholdMethod,
                   n_bootstrap: int, seed: int, scores_only: bool = False) -> dict[str, Any]:
    """:func:`radlens.metrics.findings.evaluate_findings` of ``cases`` with thresholds from ``reference``.

    Labels with empty cells are evaluated one by one on the cases where they are known; the macro and
    weighted means are then the means of those, without a CI. ``scores_only`` keeps AUROC/AUPRC.
    """
    from radlens.metrics.findings import evaluate_findings

    def one(c: pd.DataFrame, r: pd.DataFrame, names: list[str]) -> dict[str, Any]:
        score = [f"score:{n}" for n in names]
        return evaluate_findings(c[names].to_numpy(), c[score].to_numpy(), c["patient_id"].to_numpy(),
                                 r[names].to_numpy(), r[score].to_numpy(), names, method, n_bootstrap=n_bootstrap,
                                 seed=seed)

    if not (cases[labels].isna().any().any() or reference[labels].isna().any().any()):
        result = one(cases, reference, labels)
    else:
        parts = {c: one(_known(cases, c), _known(reference, c), [c]) for c in labels}
        result = {"per_finding": {c: parts[c]["per_finding"][c] for c in labels}}
        for kind in ("macro", "weighted"):
            result[kind] = {m: _mean_of([parts[c]["per_finding"][c] for c in labels], m, kind) for m in METRICS}
            result[kind]["ci"] = None
        result["bootstrap"] = {**parts[labels[0]]["bootstrap"], "n_used_macro": 0}
        result["threshold"] = parts[labels[0]]["threshold"]
        result["n_cases"] = int(len(cases))
        result["note"] = "labels with empty cells are evaluated on the cases where they are known; no CI for the means"
    if scores_only:
        keep = set(SCORE_METRICS) | {"n", "n_positive", "prevalence"}
        result["per_finding"] = {c: {**{k: v for k, v in r.items() if k in keep},
                                     "ci": {m: r["ci"][m] for m in SCORE_METRICS}}
                                 for c, r in result["per_finding"].items()}
        for kind in ("macro", "weighted"):
            ci = result[kind].get("ci")
            result[kind] = {**{m: result[kind][m] for m in SCORE_METRICS},
                            "ci": None if ci is None else {m: ci[m] for m in SCORE_METRICS}}
        result.pop("threshold", None)
    return result


def _mean_of(per_label: list[dict[str, Any]], metric: str, kind: str) -> float | None:
    values = np.array([np.nan if r[metric] is None else r[metric] for r in per_label], dtype=float)
    weights = np.array([r["prevalence"] for r in per_label], dtype=float) if kind == "weighted" else np.ones(len(values))
    ok = np.isfinite(values) & (weights > 0)
    return float(np.average(values[ok], weights=weights[ok])) if ok.any() else None


def mean_sd(per_fold: list[dict[str, Any]], metrics: tuple[str, ...], labels: list[str]) -> dict[str, Any]:
    """Mean and sample sd over folds of each metric, per label and for the macro/weighted means."""
    def summary(values: list[Any]) -> dict[str, Any]:
        finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
        return {"mean": float(finite.mean()) if len(finite) else None,
                "sd": float(finite.std(ddof=1)) if len(finite) > 1 else None, "n_folds": int(len(finite))}

    out: dict[str, Any] = {"per_finding": {c: {m: summary([f["per_finding"][c][m] for f in per_fold]) for m in metrics}
                                           for c in labels}}
    for kind in ("macro", "weighted"):
        out[kind] = {m: summary([f[kind][m] for f in per_fold]) for m in metrics}
    return out


def _finish(cohort: Cohort, fold_runs: list[dict[str, Any]], attrs: dict[str, Any], method: ThresholdMethod,
            n_bootstrap: int, seed: int, out_dir: Path) -> None:
    """Metrics, the combined predictions, attention.csv and the figure, from every fold's results."""
    import pandas as pd

    from radlens.common.atomic import write_csv_atomic, write_json_atomic
    from radlens.train.mil_figure import find_prepared, save_attention_figure

    labels = cohort.labels
    val_cases = [r["predictions"][r["predictions"]["split"] == "validation"] for r in fold_runs]
    test_cases = [r["predictions"][r["predictions"]["split"] == "test"] for r in fold_runs]
    val_metrics = [evaluate_cases(v, v, labels, method, n_bootstrap, seed, scores_only=True) for v in val_cases]
    pooled = pd.concat(val_cases, ignore_index=True)
    metrics: dict[str, Any] = {
        "unit": cohort.unit, "labels": labels, "folds": len(fold_runs),
        "counts": {"patients_cv": int(cohort.cv["patient_id"].nunique()),
                   "patients_test": int(cohort.test["patient_id"].nunique()),
                   "bags": int(len(cohort.table)), "skipped_bags": int(len(cohort.skipped))},
        "validation": {"per_fold": val_metrics, "mean_sd": mean_sd(val_metrics, SCORE_METRICS, labels),
                       "pooled": evaluate_cases(pooled, pooled, labels, method, n_bootstrap, seed, scores_only=True)},
        "test": None, "notes": cohort.notes,
        "stratification": "patient-level iterative stratification over both classes of every label",
    }
    rows = [r["predictions"] for r in fold_runs]
    if len(cohort.test):
        per_fold = [evaluate_cases(t, v, labels, method, n_bootstrap, seed) for t, v in zip(test_cases, val_cases)]
        scores = [f"score:{c}" for c in labels]
        ensemble = test_cases[0].drop(columns=[c for c in test_cases[0].columns if c.startswith("pred:")]).copy()
        ensemble[scores] = np.mean([t[scores].to_numpy() for t in test_cases], axis=0)
        ensemble["fold"] = "ensemble"
        thresholds = _thresholds(pooled, labels, method)
        rows.append(_with_predictions(ensemble, thresholds, labels))
        metrics["test"] = {"per_fold": per_fold, "mean_sd": mean_sd(per_fold, METRICS, labels),
                           "ensemble": {**evaluate_cases(ensemble, pooled, labels, method, n_bootstrap, seed),
                                        "combine": "mean of the folds' probabilities",
                                        "thresholds_from": "pooled out-of-fold validation scores"}}
    write_csv_atomic(out_dir / "predictions.csv", pd.concat(rows, ignore_index=True))
    attention = _attention(fold_runs, cohort)
    write_csv_atomic(out_dir / "attention.csv", attention)
    positive = cohort.table[labels] == 1
    names = ["[" + (", ".join(c for c, hit in zip(labels, row) if hit) or "negative") + "]" for row in positive.to_numpy()]
    bags = cohort.table.assign(_positive=positive.any(axis=1), _labels=names)
    shown = attention[attention["split"] == ("test" if len(cohort.test) else "validation")]
    save_attention_figure(shown, bags, out_dir / "attention.png", find_prepared(bags, attrs, cohort.bags_file.parent))
    write_json_atomic(out_dir / "metrics.json", metrics)
    _print(metrics, out_dir)


def _attention(fold_runs: list[dict[str, Any]], cohort: Cohort) -> pd.DataFrame:
    """Long table: one row per (fold, bag, slice) of the validation bags (own fold) and test bags (every fold)."""
    import pandas as pd

    parts = []
    for r in fold_runs:
        for split, table in [("validation", r["val_table"]), ("test", cohort.test)]:
            if split not in r["found"]:
                continue
            for bag, found in zip(table.itertuples(index=False), r["found"][split][1]):
                parts.append(pd.DataFrame({"patient_id": bag.patient_id, "case_id": bag.case_id, "path": bag.path,
                                           "file": bag.file, "split": split, "fold": r["fold"], **found}))
    return pd.concat(parts, ignore_index=True)


def _print(metrics: dict[str, Any], out_dir: Path) -> None:
    """The console line: rounded macro AUROCs, over how many labels, which were left out and why
    (:mod:`radlens.metrics.explain`'s wording), for validation (mean +- sd over folds) and the test ensemble."""
    from radlens.metrics.explain import macro_line

    labels, unit = metrics["labels"], metrics["unit"]
    line = f"train mil: {_validation_line(metrics)}"
    if metrics["test"] is not None:
        ensemble = metrics["test"]["ensemble"]
        left_out = _left_out(ensemble, labels, unit)
        shaped = {"macro": {**ensemble["macro"], "over": [c for c in labels if c not in left_out]},
                  "left_out": left_out, "n_cases": ensemble["n_cases"],
                  "bootstrap": {"n_patients": metrics["counts"]["patients_test"]}}
        line += f"; test ensemble {macro_line(shaped, what='labels', unit=f'{unit}s')}"
    print(f"{line} -> {out_dir}")


def _left_out(result: dict[str, Any], labels: list[str], unit: str) -> dict[str, str]:
    """Labels whose AUROC is undefined in one evaluation (:func:`evaluate_cases`), with the reason in
    :func:`radlens.metrics.explain.undefined_reason`'s words, counted over the cases where each is known."""
    from radlens.metrics.explain import undefined_reason

    out = {}
    for c in labels:
        n, n_pos = int(result["per_finding"][c]["n"]), int(result["per_finding"][c]["n_positive"])
        why = undefined_reason(np.arange(n) < n_pos, unit)
        if why is not None:
            out[c] = why
    return out


def _validation_line(metrics: dict[str, Any]) -> str:
    """``validation macro AUROC 0.812 +- 0.035 (mean +- sd over 3 folds) over 2 labels``, with the labels a fold left out."""
    labels, unit = metrics["labels"], metrics["unit"]
    summary = metrics["validation"]["mean_sd"]["macro"]["auroc"]
    folds = [_left_out(fold, labels, unit) for fold in metrics["validation"]["per_fold"]]
    value = "n/a" if summary["mean"] is None else f"{summary['mean']:.3f}"
    if summary["sd"] is not None:
        value += f" +- {summary['sd']:.3f}"
    n_folds = summary["n_folds"] if summary["n_folds"] == metrics["folds"] else f"{summary['n_folds']} of {metrics['folds']}"
    text = f"validation macro AUROC {value} (mean +- sd over {n_folds} folds)"
    kept = sorted({len(labels) - len(left) for left in folds})
    if kept == [len(labels)]:
        return f"{text} over {len(labels)} labels"
    span = str(kept[0]) if len(kept) == 1 else f"{kept[0]}-{kept[-1]}"
    gone = [f"{c} in fold {k} ({why})" for k, left in enumerate(folds) for c, why in left.items()]
    return f"{text} over {span} of {len(labels)} labels per fold; left out: {', '.join(gone)}"
