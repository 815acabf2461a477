"""Zero-shot multi-finding detection: one present/absent prompt pair per finding, one image pass per scan.

CT-CLIP encodes "{finding} is present." / "{finding} is not present." together with the image
for every finding of every volume (18 text + 18 image passes per volume). Here the prompt
embeddings are computed once per model (:class:`ZeroShotClassifier`, an (F, 2, D) tensor) and each
scan costs one image pass plus an (F, 2, D) dot product. P(present) is the softmax over the pair
at the model's own temperature (``logit_scale``).

The prompts come from a prompt file (:mod:`radlens.models.prompts`, which describes the format);
several phrasings of one side are averaged in embedding space and re-normalised. A prompt file
with ``mode: classes`` instead names mutually exclusive classes (one label column, softmax over
the classes): see :mod:`radlens.evaluate.zeroshot_classes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.models.prompts import check_findings, load_prompts, packaged_prompt_sets, read_prompt_spec
from radlens.models.zeroshot import ZeroShotClassifier

Split = Literal["train", "validation", "test"]


def scan_labels(ds: Any, findings: Sequence[str], split: str) -> Any:
    """0/1 labels of every scan of ``split`` (a DataFrame indexed by scan_id); unknown (-1) is an error.

    The reconstructions of a scan share its labels.
    """
    series = ds.series if "scan_id" in ds.series.columns else ds.series.assign(scan_id=ds.series["series_id"])
    table = series[series["split"] == split].groupby("scan_id", sort=False)[list(findings)].first()
    bad = [f for f in findings if not table[f].isin((0, 1)).all()]
    if bad:
        reason = f"finding column(s) {bad} have unknown labels (not 0/1) in split {split!r}"
        raise InputError(ds.path / "series.parquet", reason)
    return table.astype(np.int8)


def scan_probabilities(
    ds: Any, classifier: ZeroShotClassifier, split: str, batch_size: int = 4, device: str = "cpu"
) -> Any:
    """One row per scan of ``split``: ``scan_id, patient_id`` and P(present) per finding.

    Probabilities are averaged over the slices of a series (2D) and then over the
    reconstructions (series) of a scan, before any metric.
    """
    from radlens.evaluate.embed import embed_items, item_table
    from radlens.metrics.findings import aggregate_scans

    items = item_table(ds, split)
    if items.empty:
        raise InputError(ds.path, f"split {split!r} is empty")
    probs = classifier.probabilities(embed_items(ds, classifier.model, items, batch_size, device))
    names = list(classifier.findings)
    table = items[["series_id", "scan_id", "patient_id"]].copy()
    table[names] = probs
    per_series = aggregate_scans(table, names, by="series_id", keep=("scan_id", "patient_id"))
    return aggregate_scans(per_series, names, by="scan_id", keep=("patient_id",))


def zeroshot(
    bundle: str,
    prepared: str,
    out: str,
    split: Split = "test",
    prompts: str = "ctrate",
    findings: list[str] | None = None,
    label_column: str | None = None,
    threshold_split: Split = "validation",
    threshold_method: Literal["youden", "f1"] = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 4,
    device: str = "auto",
    overwrite: bool = False,
) -> int:
    """Zero-shot finding detection (or, with a ``mode: classes`` prompt file, classification) of a model bundle.

    Pairs mode writes OUT/predictions.csv (one row per scan: scan_id, patient_id, P(present) per
    finding), metrics.json (per finding, macro and prevalence-weighted; bootstrap CIs; thresholds
    and the split that chose them), roc.png, pr.png and run.json (config, radlens version, seed),
    all at once: nothing is written when an input is bad. Classes mode (``--label_column``) scores
    each series of the split against the classes of the prompt file and writes predictions.csv
    (P(class) per class, predicted, true), metrics.json (accuracy, balanced accuracy, macro
    one-vs-rest AUROC, per-class recall, confusion matrix, chance levels, bootstrap CIs),
    confusion.png and run.json (:mod:`radlens.evaluate.zeroshot_classes`).

    Args:
        bundle: model bundle folder, registry name or Hugging Face Hub id.
        prepared: prepared dataset folder (its card lists the finding columns).
        out: output folder; a rerun replaces the files radlens wrote there, nothing else.
        split: the split to evaluate.
        prompts: a packaged prompt set (present/absent pairs: {pairs}; classes, with --label_column:
            {classes}) or a YAML prompt file.
        findings: evaluate only these findings of the prompt set (pairs mode).
        label_column: series column holding the true class (classes mode, required there).
        threshold_split: the split on which thresholds are chosen (never the evaluated one; pairs mode).
        threshold_method: youden (max TPR - FPR) or f1 (max F1 of the positive class).
        n_bootstrap: bootstrap resamples of patients for the 95% CIs.
        seed: bootstrap seed.
        batch_size: volumes per image-encoder pass.
        device: auto, cpu, cuda, cuda:1, ...
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
    """
    config = dict(locals())
    from radlens.common.atomic import check_output, staged_output, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.evaluate.embed import resolve_model
    from radlens.evaluate.figures import curve_figures
    from radlens.io.prepared import SPLITS, PreparedDataset
    from radlens.metrics.explain import macro_line
    from radlens.metrics.findings import evaluate_findings
    from radlens.models.compat import check_compatible

    for name, value in (("split", split), ("threshold_split", threshold_split)):
        if value not in SPLITS:
            raise ConfigError(f"{name} must be one of {', '.join(SPLITS)}, got {value!r}")
    check_output(out, overwrite)
    mode = read_prompt_spec(prompts)[2]
    if mode == "classes":
        from radlens.evaluate.zeroshot_classes import zeroshot_classes

        if not label_column:
            raise ConfigError(f"prompt set {prompts!r} is a classes-mode file: give --label_column (the true class)")
        if findings:
            raise ConfigError("--findings selects present/absent pairs; a classes-mode prompt file has none")
        return zeroshot_classes(bundle, prepared, out, split, prompts, label_column,
                                n_bootstrap, seed, batch_size, device, config, overwrite)
    if label_column:
        raise ConfigError(f"--label_column needs a 'mode: classes' prompt file; {prompts!r} holds present/absent pairs")
    if threshold_split == split:
        raise ConfigError(f"thresholds must be chosen on another split than the evaluated one ({split!r})")
    if threshold_method not in ("youden", "f1"):
        raise ConfigError(f"threshold_method must be 'youden' or 'f1', got {threshold_method!r}")
    prompt_set = load_prompts(prompts)
    if findings:
        missing = [f for f in findings if f not in prompt_set.findings]
        if missing:
            raise ConfigError(f"findings {missing} have no prompts in {prompts!r} (it has {list(prompt_set.findings)})")
        prompt_set = prompt_set.subset(findings)
    ds = PreparedDataset(prepared)
    check_findings(prompt_set, ds.card.get("findings", []), prompts)
    for name in (split, threshold_split):
        if ds.split(name).empty:
            raise InputError(prepared, f"split {name!r} is empty")
    labels = {name: scan_labels(ds, prompt_set.findings, name) for name in (split, threshold_split)}
    model = resolve_model(bundle)
    check_compatible(model, ds)
    classifier = ZeroShotClassifier(model, prompt_set)
    names = list(prompt_set.findings)
    test = scan_probabilities(ds, classifier, split, batch_size, device)
    val = scan_probabilities(ds, classifier, threshold_split, batch_size, device)
    y_test = labels[split].loc[test["scan_id"]].to_numpy()
    y_val = labels[threshold_split].loc[val["scan_id"]].to_numpy()
    metrics = evaluate_findings(
        y_test, test[names].to_numpy(), test["patient_id"].to_numpy(), y_val, val[names].to_numpy(), names,
        threshold_method=threshold_method, threshold_split=threshold_split,
        n_bootstrap=n_bootstrap, seed=seed,
    )
    metrics.update(split=split, prompts=prompt_set.name, n_scans=len(test))
    with staged_output(out, overwrite, "evaluate zeroshot") as tmp:
        test.to_csv(tmp / "predictions.csv", index=False)
        write_json_atomic(tmp / "metrics.json", metrics)
        curve_figures(y_test, test[names].to_numpy(), names, tmp)
        write_json_atomic(tmp / "run.json", run_info("evaluate zeroshot", config, seed))
    print(f"zero-shot on {split}: {macro_line(metrics)} -> {out}")
    return 0


# --prompts help names every packaged set, read from the package (a new YAML file appears there by itself).
zeroshot.__doc__ = (zeroshot.__doc__ or "").replace("{pairs}", ", ".join(packaged_prompt_sets("pairs"))).replace(
    "{classes}", ", ".join(packaged_prompt_sets("classes")))
