"""Report labeller: ``radlens train labeller`` (reports + finding labels -> a text classifier bundle) and
``radlens label-reports`` (a CT-RATE style reports CSV -> a CT-RATE style labels CSV).

The classifier is a BERT-family encoder (default: the packaged MiniLM, offline) with one logit per
finding, trained with class-weighted BCE on the prepared dataset's train split (one report per
scan). Thresholds are chosen on validation (max F1 by default) and stored in the ``best/`` bundle; the
test split gives per-finding F1/AUROC with patient-bootstrap CIs (``eval/metrics.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.metrics.findings import ThresholdMethod
from radlens.train.config import OptimConfig, TrainerConfig, as_dict

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")


def texts_from_columns(table: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Per row, the non-empty values of ``columns`` joined by a space (the report sections in order)."""
    parts = [table[c].fillna("").astype(str).str.strip().tolist() for c in columns]
    return [" ".join(t for t in row if t) for row in zip(*parts)]


def report_columns(sections: Sequence[str], text_column: str | None) -> list[str]:
    """Prepared-dataset columns holding the training text: ``text_column`` or ``report_<section>``."""
    from radlens.prepare.reports import SECTIONS

    if text_column:
        return [text_column]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ConfigError(f"sections must be a non-empty subset of {', '.join(SECTIONS)}; got {list(sections)}")
    return [f"report_{s}" for s in sections]


def csv_columns(sections: Sequence[str], text_column: str | None) -> list[str]:
    """The reports-CSV columns (CT-RATE names: ``Findings_EN`` ...) that give a bundle's text."""
    from radlens.prepare.reports import CTRATE_COLUMNS

    if text_column:
        return [text_column]
    by_section = {section: column for column, section in CTRATE_COLUMNS.items()}
    return [by_section[s] for s in sections]


def _split_reports(
    prepared: Any, findings: Sequence[str], columns: Sequence[str]
) -> dict[str, tuple[pd.DataFrame, list[str], np.ndarray]]:
    """Per split: (rows, texts, targets), one row per scan, rows without any report text dropped."""
    from radlens.data.labelled import targets_of

    series = prepared.series
    missing = [c for c in columns if c not in series.columns]
    if missing:
        raise InputError(prepared.path, f"no report column(s) {missing} in series.parquet (choose sections or text_column)")
    key = "scan_id" if "scan_id" in series.columns else "series_id"
    table = series.drop_duplicates(key).reset_index(drop=True)
    texts = np.array(texts_from_columns(table, columns), dtype=object)
    keep = texts != ""
    out = {}
    for split in SPLITS:
        mask = keep & (table["split"] == split).to_numpy()
        if not mask.any():
            raise InputError(prepared.path, f"split {split!r} has no scan with report text in {list(columns)}")
        rows = table[mask].reset_index(drop=True)
        out[split] = (rows, texts[mask].tolist(), targets_of(rows, findings, prepared.path))
    return out


def train_labeller(
    prepared: str,
    out: str,
    encoder: str = "minilm",
    findings: list[str] | None = None,
    sections: list[str] | None = None,
    text_column: str | None = None,
    context_length: int = 256,
    batch_size: int = 16,
    dropout: float = 0.1,
    optim: OptimConfig | None = None,
    trainer: TrainerConfig | None = None,
    threshold_method: ThresholdMethod = "f1",
    n_bootstrap: int = 1000,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a multi-label report classifier on PREPARED's reports and labels; returns the run folder OUT.

    Args:
        prepared: prepared dataset with finding columns and report text (train/validation/test).
        out: run folder: config.yaml, checkpoints/, logs/, bundle/ (for label-reports), eval/ (test metrics).
        encoder: ``minilm`` (packaged, offline), ``tiny`` (from scratch, for tests/demos), or a
            BERT-family local folder / hub id.
        findings: findings to learn (default: all in the card).
        sections: report sections joined as the text (default: findings, impression).
        text_column: a series.parquet column to use instead of the sections (e.g. ``text``).
        context_length: tokens per report (longer reports are truncated).
        batch_size: reports per training batch.
        dropout: dropout before the head.
        optim: AdamW + warm-up/cosine.
        trainer: steps, devices, precision, validation/checkpoint intervals (monitor: val/loss).
        threshold_method: ``f1`` (max F1) or ``youden`` on validation.
        n_bootstrap: patient-bootstrap resamples for the test confidence intervals.
        seed: seeds the head, the scratch encoder and the batch order.
        resume: ``latest`` or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.common.runinfo import run_info, write_results
    from radlens.data.labelled import FindingDataConfig, ReportCollate, ReportDataset
    from radlens.data.modules import LabelledTextDataModule
    from radlens.metrics.explain import macro_line
    from radlens.metrics.findings import finding_results, scan_scores, validation_thresholds
    from radlens.models.labeller import ReportLabeller, encoder_spec
    from radlens.models.registry import build_model
    from radlens.train.multilabel import MultiLabelTask, device_of, positive_weights, predict_scores, start_finding_run
    from radlens.train.run import run

    sections = sections or ["findings", "impression"]
    columns = report_columns(sections, text_column)
    optim = optim or OptimConfig(lr=5e-5, weight_decay=0.01, warmup_steps=50)
    data = FindingDataConfig(findings=findings, batch_size=batch_size)
    trainer_cfg, ds, names = start_finding_run(prepared, data, optim, trainer, out, resume)
    splits = _split_reports(ds, names, columns)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = ReportLabeller(build_model(encoder_spec(encoder, context_length), texts=splits["train"][1]), names, dropout)

    config = {"prepared": prepared, "out": out, "encoder": encoder, "findings": names, "sections": sections,
              "text_column": text_column, "context_length": context_length, "batch_size": batch_size, "dropout": dropout,
              "optim": as_dict(optim), "trainer": as_dict(trainer_cfg), "threshold_method": threshold_method,
              "n_bootstrap": n_bootstrap, "seed": seed, "resume": resume}
    sets = {s: ReportDataset(texts, targets) for s, (_, texts, targets) in splits.items()}
    datamodule = LabelledTextDataModule(sets["train"], sets["validation"], model.tokenize, batch_size, 0, seed)
    datamodule.prepared = ds
    collate = ReportCollate(model.tokenize)

    def scores(split: str) -> Any:
        return scan_scores(splits[split][0], splits[split][2],
                           predict_scores(model, sets[split], collate, batch_size, device_of()), names)

    scans: dict[str, Any] = {}

    def thresholds(_: Any) -> dict[str, Any]:
        scans["validation"] = scores("validation")
        chosen = validation_thresholds(scans["validation"], names, threshold_method)
        return {"labeller": {"thresholds": chosen, "threshold_method": threshold_method, "sections": sections,
                             "text_column": text_column}}

    result = run(MultiLabelTask(model, positive_weights(sets["train"].targets), optim), datamodule, trainer_cfg, out, resume,
                 config, seed, best_extra=thresholds)
    if result.is_global_zero:
        metrics, predictions = finding_results(scans["validation"], scores("test"), names, threshold_method, n_bootstrap, seed)
        # eval/ is this run's own folder (one from before output markers has none): write into it, deleting nothing.
        write_results(result.folder / "eval", metrics, predictions, run_info("train labeller", config, seed), overwrite=True)
        print(f"labeller on test: {macro_line(metrics, (('f1', 'F1'), ('auroc', 'AUROC')))} -> {result.folder / 'eval'}")
    return result.folder


def _read_reports(path: Path, needed: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable CSV ({err})") from err
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; this labeller reads VolumeName + {list(needed[1:])}")
    return table


def label_reports(bundle: str, reports: str, out: str, batch_size: int = 32, device: str = "auto") -> int:
    """Label every report of REPORTS (CSV: VolumeName + Findings_EN, Impressions_EN) with a labeller BUNDLE
    (a ``train labeller`` run folder or its ``best/`` bundle).

    OUT (CSV) has CT-RATE's labels shape: VolumeName, one 0/1 column per finding (bundle order),
    then ``<finding> probability`` columns. Rows without report text are skipped and listed in
    ``OUT.failures.csv``. Nothing is written unless every check passes (atomic writes).

    Args:
        bundle: a report-labeller bundle (the ``best/`` bundle of a ``train labeller`` run) or its run folder.
        reports: the reports CSV (CT-RATE layout: VolumeName, Findings_EN, Impressions_EN); never written to.
        out: the labels CSV to write (CT-RATE's labels layout).
        batch_size: reports per encoder pass.
        device: auto (a GPU when there is one), cpu, cuda, cuda:1, ...
    """
    import pandas as pd

    from radlens.common.atomic import write_csv_atomic
    from radlens.data.labelled import ReportCollate, ReportDataset
    from radlens.models.bundle import load_model, read_index, resolve_bundle
    from radlens.train.multilabel import device_of, predict_scores

    src, dst = Path(reports), Path(out)
    if dst.resolve() == src.resolve():
        raise InputError(dst, "the output would overwrite the input reports CSV")
    folder = resolve_bundle(bundle)
    meta = read_index(folder).get("extra", {}).get("labeller")
    if not isinstance(meta, dict) or "thresholds" not in meta:
        raise InputError(folder, "not a report-labeller bundle with validation thresholds (extra.labeller); "
                                 "use the best/ bundle of a `radlens train labeller` run")
    columns = csv_columns(meta["sections"], meta.get("text_column"))
    table = _read_reports(src, ["VolumeName", *columns])
    model = load_model(folder, kind="report_labeller")
    texts = texts_from_columns(table, columns)
    ok = np.array([bool(t) for t in texts])
    if not ok.any():
        raise InputError(src, f"no row has report text in {columns}")
    names = model.findings
    scores = predict_scores(model, ReportDataset([t for t, k in zip(texts, ok) if k], np.zeros((int(ok.sum()), len(names)))),
                            ReportCollate(model.tokenize), batch_size, device_of(device))
    thresholds = np.array([meta["thresholds"][f] for f in names])
    labels = pd.DataFrame((scores >= thresholds).astype(int), columns=names)
    probs = pd.DataFrame(scores, columns=[f"{f} probability" for f in names])
    result = pd.concat([table.loc[ok, ["VolumeName"]].reset_index(drop=True), labels, probs], axis=1)
    write_csv_atomic(dst, result)
    failures = table.loc[~ok, ["VolumeName"]].assign(reason=f"no report text in {columns}")
    if len(failures):
        write_csv_atomic(dst.with_name(dst.name + ".failures.csv"), failures)
    print(f"labelled {len(result)} report(s) -> {dst}" + (f"; {len(failures)} skipped (see {dst.name}.failures.csv)" if len(failures) else ""))
    return 0
