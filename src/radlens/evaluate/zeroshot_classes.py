"""Zero-shot multi-class classification (``mode: classes`` prompt files): P(class | image) by softmax.

For mutually exclusive classes held in one categorical column (e.g. ``contrast`` written by the
BIDS importer), each class has one or more prompts; their text embeddings are averaged and
re-normalised once per model (:class:`ClassZeroShotClassifier`, a (C, D) tensor), and an image
costs one image pass plus a (D, C) product; P(class | image) is the softmax over the classes at
the model's own temperature (``logit_scale``).

The class prompts come from a ``mode: classes`` prompt file (:mod:`radlens.models.prompts`, which
describes the format); caption *fields* prompts are rendered with the evaluated dataset's caption
config (:func:`radlens.models.zeroshot.dataset_caption_config`), so that a model trained on metadata captions (MR-CLIP)
reads prompts in its training template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError
from radlens.models.prompts import load_class_prompts
from radlens.models.zeroshot import ClassZeroShotClassifier, dataset_caption_config

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.prepared import PreparedDataset

# Excluded-label key for series whose label column is empty.
MISSING = "(missing)"


def series_class_labels(
    ds: PreparedDataset, column: str, split: str, classes: tuple[str, ...]
) -> tuple[pd.Series, dict[str, int]]:
    """(label per series_id of ``split`` whose label is one of ``classes``, {excluded label: count}).

    Series with an empty label or a label that has no prompts cannot be scored and are excluded.
    """
    from pandas.api.types import is_numeric_dtype

    series = ds.series[ds.series["split"] == split]
    if column not in series.columns:
        available = ", ".join(c for c in series.columns if not is_numeric_dtype(series[c])) or "none"
        reason = f"no column {column!r} for the class labels (text columns: {available})"
        raise InputError(ds.path / "series.parquet", reason)
    labels = series.set_index("series_id")[column]
    text = labels.where(labels.notna(), MISSING).astype(str).str.strip().replace("", MISSING)
    keep = text.isin(classes)
    return text[keep], {str(k): int(v) for k, v in text[~keep].value_counts().items()}


def series_class_probabilities(
    ds: PreparedDataset,
    classifier: ClassZeroShotClassifier,
    series_ids: pd.Index,
    split: str,
    batch_size: int,
    device: str,
) -> pd.DataFrame:
    """One row per series in ``series_ids``: ``series_id, patient_id`` and P(class) per class.

    2D datasets: the slices' probabilities averaged per series.
    """
    from radlens.evaluate.embed import embed_items, item_table
    from radlens.metrics.findings import aggregate_scans

    items = item_table(ds, split)
    items = items[items["series_id"].isin(series_ids)].reset_index(drop=True)
    probs = classifier.probabilities(embed_items(ds, classifier.model, items, batch_size, device))
    names = list(classifier.classes)
    table = items[["series_id", "patient_id"]].copy()
    table[names] = probs
    return aggregate_scans(table, names, by="series_id", keep=("patient_id",))


def zeroshot_classes(
    bundle: str, prepared: str, out: str, split: str, prompts: str, label_column: str,
    n_bootstrap: int, seed: int, batch_size: int, device: str, config: dict[str, Any], overwrite: bool = False,
) -> int:
    """The classes mode of ``radlens evaluate zeroshot`` (see :func:`radlens.evaluate.zeroshot.zeroshot`).

    Every input is checked before the model is loaded. Writes OUT/predictions.csv (series_id,
    patient_id, P(class) per evaluated class, predicted, true), metrics.json, confusion.png and
    run.json at once (``overwrite``: see :func:`radlens.common.atomic.staged_output`).
    """
    from radlens.common.atomic import staged_output, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.evaluate.embed import resolve_model
    from radlens.evaluate.multiclass import confusion_figure, evaluate_classes
    from radlens.io.prepared import PreparedDataset
    from radlens.models.compat import check_compatible

    ds = PreparedDataset(prepared)
    prompt_set = load_class_prompts(prompts, dataset_caption_config(ds))
    if ds.split(split).empty:
        raise InputError(prepared, f"split {split!r} is empty")
    labels, excluded = series_class_labels(ds, label_column, split, prompt_set.classes)
    present = [c for c in prompt_set.classes if c in set(labels)]
    if len(present) < 2:
        reason = (f"split {split!r} has {len(present)} of the prompt classes {list(prompt_set.classes)} in column "
                  f"{label_column!r} (labels found: {sorted(set(labels) | set(excluded))}); need at least 2")
        raise InputError(ds.path / "series.parquet", reason)
    absent = [c for c in prompt_set.classes if c not in present]
    prompt_set = prompt_set.subset(present)
    model = resolve_model(bundle)
    check_compatible(model, ds)
    classifier = ClassZeroShotClassifier(model, prompt_set)
    table = series_class_probabilities(ds, classifier, labels.index, split, batch_size, device)
    probs = table[present].to_numpy()
    table["predicted"] = np.asarray(present)[probs.argmax(axis=1)]
    table["true"] = labels.loc[table["series_id"]].to_numpy()
    y_true = np.array([present.index(t) for t in table["true"]])
    metrics = evaluate_classes(y_true, probs, table["patient_id"].to_numpy(), present, n_bootstrap, seed)
    metrics.update(
        mode="classes", split=split, prompts=prompt_set.name, label_column=label_column, unit="series",
        n_series=len(table), classes=present, classes_absent=absent, excluded=excluded,
        prompt_texts=dict(zip(present, (list(t) for t in prompt_set.prompts))),
    )
    if absent:
        metrics["left_out"] = {**{c: f"no series in split {split!r}" for c in absent}, **metrics["left_out"]}
        metrics["notes"].insert(0, f"prompt classes {absent} do not occur in split {split!r}: the softmax and "
                                   f"metrics use the {len(present)} present classes")
    with staged_output(out, overwrite, "evaluate zeroshot") as tmp:
        table.to_csv(tmp / "predictions.csv", index=False)
        write_json_atomic(tmp / "metrics.json", metrics)
        confusion_figure(np.asarray(metrics["confusion_matrix"]["counts"]), present, tmp / "confusion.png")
        write_json_atomic(tmp / "run.json", run_info("evaluate zeroshot", config, seed))
    print(f"{class_line(metrics, len(present))} -> {out}")
    return 0


def class_line(metrics: dict[str, Any], n_classes: int) -> str:
    """The console line of a classes-mode result: each summary metric with its CI and chance level,
    the classes left out and why, the split's size (see :mod:`radlens.metrics.explain`)."""
    from radlens.evaluate.multiclass import SUMMARY_METRICS
    from radlens.metrics.explain import MIN_PATIENTS

    chance = {"accuracy": metrics["chance"]["accuracy"], "balanced_accuracy": 1 / n_classes, "macro_auroc": 0.5}
    parts = []
    for m in SUMMARY_METRICS:
        value, ci = metrics[m], metrics["ci"][m]
        text = f"{m.replace('_', ' ')} {'n/a' if value is None else f'{value:.3f}'}"
        if ci["low"] is not None:
            text += f" (95% CI {ci['low']:.3f}-{ci['high']:.3f})"
        parts.append(f"{text} [chance {chance[m]:.3f}]")
    n_patients = metrics["bootstrap"]["n_patients"]
    line = f"{metrics['n_series']} series from {n_patients} patient(s), {n_classes} classes: " + ", ".join(parts)
    if n_patients < MIN_PATIENTS:
        line += f"; fewer than {MIN_PATIENTS} patients: not reliable"
    if metrics["left_out"]:
        line += "; left out: " + ", ".join(f"{c} ({why})" for c, why in metrics["left_out"].items())
    return line
