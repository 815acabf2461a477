"""Binary detection metrics per finding, thresholds chosen on validation, patient-bootstrap CIs.

What the reference evaluations get wrong and this module does not: AUROC/AUPRC are computed on
the continuous scores (never thresholded predictions); the operating threshold is chosen on a
*different* split (validation) and then applied to the evaluated one; F1 is the positive
class's; the bootstrap really resamples, with replacement, whole patients (all their scans
together), and says how many resamples it could use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

ThresholdMethod = Literal["youden", "f1"]
SCORE_METRICS = ("auroc", "auprc")
THRESHOLD_METRICS = ("f1", "precision", "recall", "specificity", "accuracy")
METRICS = SCORE_METRICS + THRESHOLD_METRICS


def aggregate_scans(
    table: pd.DataFrame, columns: Sequence[str], by: str = "scan_id", keep: Sequence[str] = ("patient_id",)
) -> pd.DataFrame:
    """One row per ``by`` (e.g. a scan with several reconstructions): the mean of ``columns``.

    ``keep`` columns (constant within a group, like ``patient_id``) are carried over. Labels of
    reconstructions of one scan agree, so their mean is the scan's label.
    """
    grouped = table.groupby(by, sort=False)
    out = grouped[list(columns)].mean()
    for col in keep:
        out[col] = grouped[col].first()
    return out.reset_index()[[by, *keep, *columns]]


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    return tp, fp, fn, len(y) - tp - fp - fn


def _ratio(num: float, den: float, zero_division: float = 0.0) -> float:
    return num / den if den else zero_division


def threshold_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, zero_division: float = 0.0
) -> dict[str, float]:
    """F1 (of the positive class), precision, recall, specificity, accuracy of ``scores >= threshold``.

    Counted with numpy rather than sklearn's ``*_score`` functions: the bootstrap calls this
    18 x 1000 times and sklearn's per-call input validation dominates at that size (the values
    are checked against sklearn in the tests). An undefined ratio (0/0) counts as
    ``zero_division``: 0 as sklearn's ``zero_division=0`` by default, NaN to mark it undefined.
    """
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp, fn, tn = _counts(y, pred)
    z = zero_division
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, z),
        "precision": _ratio(tp, tp + fp, z),
        "recall": _ratio(tp, tp + fn, z),
        "specificity": _ratio(tn, tn + fp, z),
        "accuracy": _ratio(tp + tn, len(y), z),
    }


def score_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (average precision) on continuous scores; NaN when only one class is present.

    Same definitions as sklearn's ``roc_auc_score`` (ties count one half) and
    ``average_precision_score`` (step-wise, tied scores form one threshold), computed directly:
    sklearn's input validation costs ~5 ms a call, and the bootstrap makes 36,000 of them for
    18 findings (the tests check equality with sklearn).
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return {"auroc": float("nan"), "auprc": float("nan")}
    auroc = (rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tps = np.cumsum(y[order])[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall_step = np.diff(np.r_[0, tps]) / n_pos
    return {"auroc": float(auroc), "auprc": float(np.sum(recall_step * precision))}


def binary_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float, zero_division: float = 0.0
) -> dict[str, float]:
    """All of :data:`METRICS` for one finding (``zero_division``: see :func:`threshold_metrics`)."""
    return {**score_metrics(y_true, scores), **threshold_metrics(y_true, scores, threshold, zero_division)}


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, method: ThresholdMethod = "youden") -> float:
    """The operating threshold on these (validation) scores: max Youden J (TPR - FPR) or max F1.

    Returns a threshold that is one of the scores, to be used as ``scores >= threshold``.
    Raises ValueError when the labels have one class (no threshold can be chosen).
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y_true).astype(int)
    if y.min() == y.max():
        raise ValueError("cannot choose a threshold: the labels have only one class")
    if method == "youden":
        fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)
        # thresholds[0] is +inf (nothing predicted positive): never an operating point.
        return float(thresholds[1 + int(np.argmax((tpr - fpr)[1:]))])
    if method == "f1":
        precision, recall, thresholds = precision_recall_curve(y, scores)
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
        return float(thresholds[int(np.argmax(f1[:-1]))])
    raise ValueError(f"unknown threshold method {method!r}; use 'youden' or 'f1'")


def _means(
    per_finding: dict[str, dict[str, float]], weights: dict[str, float], over: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Macro and prevalence-weighted means of each metric over the findings ``over`` (default: all)
    where it is finite."""
    names = list(per_finding if over is None else over)
    out: dict[str, dict[str, float]] = {"macro": {}, "weighted": {}}
    for metric in METRICS:
        values = np.array([per_finding[f][metric] for f in names], dtype=np.float64)
        w = np.array([weights[f] for f in names], dtype=np.float64)
        ok = np.isfinite(values)
        out["macro"][metric] = float(values[ok].mean()) if ok.any() else float("nan")
        weighted = ok.any() and w[ok].sum() > 0
        out["weighted"][metric] = float(np.average(values[ok], weights=w[ok])) if weighted else float("nan")
    return out


def patient_resamples(patients: np.ndarray, n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Row indices of ``n`` bootstrap resamples: as many patients as there are, drawn with
    replacement, each bringing all of its rows (``patients`` holds the patient id of each row)."""
    _, codes = np.unique(np.asarray(patients), return_inverse=True)
    members = [np.flatnonzero(codes == p) for p in range(codes.max() + 1)]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield np.concatenate([members[p] for p in rng.integers(0, len(members), size=len(members))])


def patient_bootstrap(
    labels: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    thresholds: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    over: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Bootstrap distributions of every metric, resampling patients with replacement.

    ``labels``/``scores`` are (N, F) per scan, ``patients`` (N,) their patient ids, ``thresholds``
    (F,) fixed (chosen on validation). Resamples come from :func:`patient_resamples`. A finding
    with one class in a resample is skipped for that resample. The macro/weighted means of a
    resample are taken over the findings of ``over`` (column indices; default: all) that have both
    classes in it, so one finding without positives no longer costs every other finding its CI;
    ``n_findings`` holds how many findings each used resample's means are over. Returns
    ``{"per_finding": [F x {metric: values}], "macro"/"weighted": {metric: values}, "n_findings": values}``.
    """
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    n_f = labels.shape[1]
    over = list(range(n_f)) if over is None else list(over)
    per_finding: list[dict[str, list[float]]] = [{m: [] for m in METRICS} for _ in range(n_f)]
    means: dict[str, dict[str, list[float]]] = {"macro": {m: [] for m in METRICS}, "weighted": {m: [] for m in METRICS}}
    counts: list[int] = []
    for idx in patient_resamples(patients, n, seed):
        y, s = labels[idx], scores[idx]
        values = {}
        for f in range(n_f):
            if y[:, f].all() or not y[:, f].any():
                continue
            values[f] = binary_metrics(y[:, f], s[:, f], thresholds[f])
            for m in METRICS:
                per_finding[f][m].append(values[f][m])
        defined = [f for f in over if f in values]
        if not defined:
            continue
        agg = _means({str(f): values[f] for f in defined}, {str(f): float(y[:, f].mean()) for f in defined})
        for kind in means:
            for m in METRICS:
                means[kind][m].append(agg[kind][m])
        counts.append(len(defined))
    return {"per_finding": [_arrays(d) for d in per_finding], **{k: _arrays(v) for k, v in means.items()},
            "n_findings": np.asarray(counts, dtype=np.int64)}


def _arrays(values: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {m: np.asarray(v) for m, v in values.items()}


def percentile_ci(values: np.ndarray, level: float) -> dict[str, Any]:
    """Percentile interval of bootstrap ``values`` at ``level`` and how many values it rests on."""
    if len(values) == 0:
        return {"low": None, "high": None, "n": 0}
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return {"low": float(lo), "high": float(hi), "n": int(len(values))}


def _nan_to_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def evaluate_findings(
    test_labels: np.ndarray,
    test_scores: np.ndarray,
    test_patients: np.ndarray,
    val_labels: np.ndarray,
    val_scores: np.ndarray,
    findings: Sequence[str],
    threshold_method: ThresholdMethod = "youden",
    threshold_split: str = "validation",
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """metrics.json content: per finding + macro + prevalence-weighted, with bootstrap CIs, and what they rest on.

    Thresholds come from ``val_*`` (the ``threshold_split``) and are applied unchanged to
    ``test_*``. A finding whose validation labels have one class falls back to 0.5, recorded as
    ``threshold_source: "default"``. NaN (undefined) values are written as null.

    A finding without a positive (or without a negative) case in the evaluated split has no
    AUROC/AUPRC and no ratio with a zero denominator (null); it is ``defined: false`` with a
    ``note``, listed in ``left_out`` with the reason, and left out of the macro and weighted means,
    whose ``over`` names the findings they were taken over. ``notes`` says in words what is thin:
    findings left out, fewer than :data:`radlens.metrics.explain.MIN_PATIENTS` patients, CIs that
    could not be computed or rest on few resamples.
    """
    from radlens.metrics.explain import ci_note, join_notes, left_out_note, split_notes, undefined_reason

    test_labels, val_labels = np.asarray(test_labels).astype(int), np.asarray(val_labels).astype(int)
    thresholds, sources = [], []
    for f in range(len(findings)):
        try:
            thresholds.append(choose_threshold(val_labels[:, f], val_scores[:, f], threshold_method))
            sources.append(threshold_split)
        except ValueError:
            thresholds.append(0.5)
            sources.append("default")
    reasons = {name: undefined_reason(test_labels[:, f]) for f, name in enumerate(findings)}
    left_out = {name: why for name, why in reasons.items() if why is not None}
    defined = [name for name in findings if name not in left_out]
    point = {
        name: binary_metrics(test_labels[:, f], test_scores[:, f], thresholds[f], np.nan if left_out.get(name) else 0.0)
        for f, name in enumerate(findings)
    }
    prevalence = {name: float(test_labels[:, f].mean()) for f, name in enumerate(findings)}
    boot = patient_bootstrap(test_labels, test_scores, test_patients, np.asarray(thresholds), n_bootstrap, seed,
                             over=[f for f, name in enumerate(findings) if name in defined])
    result: dict[str, Any] = {"per_finding": {}}
    ci_notes: list[str | None] = []
    for f, name in enumerate(findings):
        cis = {m: percentile_ci(boot["per_finding"][f][m], level) for m in METRICS}
        result["per_finding"][name] = {
            **{m: _nan_to_none(v) for m, v in point[name].items()},
            "ci": cis,
            "threshold": thresholds[f],
            "threshold_source": sources[f],
            "n": int(len(test_labels)),
            "n_positive": int(test_labels[:, f].sum()),
            "prevalence": prevalence[name],
            "defined": name not in left_out,
            **({"note": f"AUROC/AUPRC undefined: {left_out[name]}"} if name in left_out else {}),
        }
        if name not in left_out:
            ci_notes.append(ci_note(f"{name} AUROC", cis["auroc"], n_bootstrap, "a resample without a positive or negative patient"))
    for kind, values in _means(point, prevalence, defined).items():
        cis = {m: percentile_ci(boot[kind][m], level) for m in METRICS}
        result[kind] = {**{m: _nan_to_none(v) for m, v in values.items()}, "ci": cis, "over": list(defined),
                        "n_findings": len(defined)}
    n_patients = int(len(np.unique(test_patients)))
    counts = boot["n_findings"]
    varying = int(np.sum(counts < len(defined)))
    result["left_out"] = left_out
    result["n_cases"] = int(len(test_labels))
    result["bootstrap"] = {
        "unit": "patient",
        "n_requested": n_bootstrap,
        "seed": seed,
        "level": level,
        "n_patients": n_patients,
        "n_used_macro": int(len(boot["macro"]["auroc"])),
        "macro_over": "the findings defined on the split that have both classes in each resample",
        "n_resamples_with_fewer_findings": varying,
    }
    why_macro = "no resample had a finding with both classes" if defined else "no finding is defined on the split"
    result["notes"] = join_notes(
        [left_out_note(left_out, len(findings))],
        split_notes(n_patients, len(test_labels)),
        [ci_note("the macro AUROC", result["macro"]["ci"]["auroc"], n_bootstrap, why_macro)],
        [f"in {varying} of {len(counts)} resamples some findings had one class; those resamples' means are over "
         "the findings defined in them" if varying else None],
        ci_notes,
    )
    result["threshold"] = {"method": threshold_method, "split": threshold_split}
    return result


def mean_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the findings (columns) that have both classes (NaN when none has); a NaN
    target (label unknown) leaves that case out of its finding."""
    targets = np.asarray(targets, dtype=np.float64)
    values = []
    for f in range(targets.shape[1]):
        known = np.isfinite(targets[:, f])
        values.append(score_metrics(targets[known, f], scores[known, f])["auroc"])
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def scan_scores(table: pd.DataFrame, labels: np.ndarray, scores: np.ndarray, findings: Sequence[str]) -> pd.DataFrame:
    """Per-item labels and scores averaged per scan (reconstructions of one scan are one case)."""
    import pandas as pd

    scan = table["scan_id"] if "scan_id" in table.columns else table["series_id"]
    frame = pd.DataFrame({"scan_id": scan.to_numpy(), "patient_id": table["patient_id"].to_numpy()})
    frame = pd.concat(
        [frame, pd.DataFrame(labels, columns=list(findings)), pd.DataFrame(scores, columns=[f"score:{f}" for f in findings])],
        axis=1,
    )
    return aggregate_scans(frame, [*findings, *[f"score:{f}" for f in findings]])


def validation_thresholds(val: pd.DataFrame, findings: Sequence[str], method: ThresholdMethod = "youden") -> dict[str, float]:
    """Per-finding thresholds on a :func:`scan_scores` validation table (0.5 where it has one class)."""
    out = {}
    for f in findings:
        try:
            out[f] = choose_threshold(val[f].to_numpy(), val[f"score:{f}"].to_numpy(), method)
        except ValueError:
            out[f] = 0.5
    return out


def finding_results(
    val: pd.DataFrame,
    test: pd.DataFrame,
    findings: Sequence[str],
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """metrics.json content and the per-scan test predictions table from :func:`scan_scores` tables.

    The predictions table has ``scan_id, patient_id``, the labels, ``score:<finding>`` and
    ``pred:<finding>`` (score >= the validation threshold).
    """
    score_cols = [f"score:{f}" for f in findings]
    metrics = evaluate_findings(
        test[list(findings)].to_numpy(), test[score_cols].to_numpy(), test["patient_id"].to_numpy(),
        val[list(findings)].to_numpy(), val[score_cols].to_numpy(), findings, threshold_method,
        n_bootstrap=n_bootstrap, seed=seed,
    )
    predictions = test.copy()
    for f in findings:
        predictions[f"pred:{f}"] = (predictions[f"score:{f}"] >= metrics["per_finding"][f]["threshold"]).astype(int)
    return metrics, predictions
