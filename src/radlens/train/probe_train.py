"""``radlens train probe``: ClassFine on a prepared dataset, then test metrics with validation thresholds.

Run folder (:func:`radlens.train.run.run`): ``config.yaml``, ``checkpoints/``, ``logs/``, the
ClassFine bundles ``best/`` (best checkpoint by ``val/loss``, with the validation thresholds) and
``last/``, plus ``eval/`` (metrics.json, predictions.csv, run.json on the test split, per scan).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from radlens.data.labelled import FindingDataConfig
from radlens.metrics.findings import ThresholdMethod
from radlens.train.config import OptimConfig, TrainerConfig, as_dict


def train_probe(
    data: FindingDataConfig,
    encoder: str,
    out: str = "runs/probe",
    features: Literal["embedding", "pooled"] = "embedding",
    hidden: int = 0,
    dropout: float = 0.0,
    optim: OptimConfig | None = None,
    trainer: TrainerConfig | None = None,
    evaluate: bool = True,
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a ClassFine head on a frozen CLIP image encoder; returns the run folder.

    Args:
        data: prepared dataset, findings (default: all in the card), batches, augmentation.
        encoder: CLIP bundle folder (or registry name / hub id) whose image encoder is frozen.
        out: the run folder.
        features: ``embedding`` (CLIP space) or ``pooled`` (image tower before the projection).
        hidden: hidden width of a two-layer MLP head (0: a linear head).
        dropout: dropout before the head's layers.
        optim: AdamW + warm-up/cosine for the head.
        trainer: steps, devices, precision, validation/checkpoint intervals (monitor: val/loss).
        evaluate: score the test split with thresholds chosen on validation (needs a test split).
        threshold_method: ``youden`` or ``f1`` on the validation scores.
        n_bootstrap: patient-bootstrap resamples for the confidence intervals.
        seed: seeds the head, batch order and augmentation.
        resume: ``latest`` or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.common.runinfo import run_info, write_results
    from radlens.data.labelled import FindingDataset, collate_findings, require_splits
    from radlens.data.modules import LabelledImageDataModule
    from radlens.metrics.findings import finding_results, scan_scores, validation_thresholds
    from radlens.models.bundle import load_model
    from radlens.models.classfine import ClassFineModel
    from radlens.models.compat import check_compatible
    from radlens.train.multilabel import MultiLabelTask, device_of, positive_weights, predict_scores, start_finding_run
    from radlens.train.run import run

    optim = optim or OptimConfig(lr=1e-3, weight_decay=1e-4, warmup_steps=10)
    trainer_cfg, prepared, findings = start_finding_run(data, optim, trainer, out, resume)
    require_splits(prepared.series, ("train", "validation", *(("test",) if evaluate else ())), prepared.path)
    clip = load_model(encoder, kind="clip")
    check_compatible(clip, prepared)
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = LabelledImageDataModule(prepared, findings, data.batch_size, data.eval_batch_size, data.num_workers,
                                         data.augment if data.augment.enabled else None, seed)
    test_set = FindingDataset(prepared, "test", findings) if evaluate else None

    config = {"data": as_dict(data), "encoder": encoder, "features": features, "hidden": hidden, "dropout": dropout,
              "optim": as_dict(optim), "trainer": as_dict(trainer_cfg), "evaluate": evaluate,
              "threshold_method": threshold_method, "n_bootstrap": n_bootstrap, "out": out, "seed": seed,
              "resume": resume}
    model = ClassFineModel(clip, findings, features, hidden, dropout)
    task = MultiLabelTask(model, positive_weights(datamodule.train_set.targets), optim)
    device, batch = device_of(), data.eval_batch_size or data.batch_size

    def scores(ds: FindingDataset) -> Any:
        return scan_scores(ds.table, ds.targets, predict_scores(model, ds, collate_findings, batch, device), findings)

    val: dict[str, Any] = {}

    def thresholds(_: Any) -> dict[str, Any]:
        val["scores"] = scores(datamodule.val_set)
        chosen = validation_thresholds(val["scores"], findings, threshold_method)
        return {"classfine": {"thresholds": chosen, "threshold_method": threshold_method}}

    result = run(task, datamodule, trainer_cfg, out, resume, config, seed, {"findings": findings}, thresholds)
    run_dir = result.folder
    if result.is_global_zero and test_set is not None:
        metrics, predictions = finding_results(val["scores"], scores(test_set), findings, threshold_method, n_bootstrap, seed)
        # eval/ is this run's own folder (one from before output markers has none): write into it, deleting nothing.
        write_results(run_dir / "eval", metrics, predictions, run_info("train probe", config, seed), overwrite=True)
        print(f"ClassFine: test macro AUROC {metrics['macro']['auroc']} over {len(findings)} finding(s) -> {run_dir / 'eval'}")
    return run_dir
