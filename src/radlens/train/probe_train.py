"""``radlens train probe``: ClassFine on a prepared dataset, then test metrics with validation thresholds.

Run folder: the engine's ``config.yaml``, ``checkpoints/``, ``logs/``, plus ``bundle/`` (the
ClassFine bundle, from the best checkpoint by ``val/loss``) and ``eval/`` (metrics.json,
predictions.csv, run.json on the test split, per scan).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from radlens.metrics.findings import ThresholdMethod
from radlens.train.config import OptimConfig, TrainerConfig, as_dict
from radlens.train.probe_data import FindingDataConfig


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

    from radlens.evaluate.embed import check_compatible
    from radlens.common.runinfo import run_info
    from radlens.train.clip import preprocessing_from_card
    from radlens.evaluate.probe import finding_results, scan_scores, validation_thresholds, write_results
    from radlens.models.bundle import load_model
    from radlens.train.engine import CHECKPOINTS, LAST, build_trainer, write_run_config
    from radlens.train.probe_data import (
        FindingDataset, device_of, positive_weights, require_splits, restore_best, start_finding_run, training_loaders,
    )
    from radlens.train.probe_module import ClassFineModel, MultiLabelModule, predict_scores, save_classfine

    optim = optim or OptimConfig(lr=1e-3, weight_decay=1e-4, warmup_steps=10)
    trainer_cfg, run_dir, ckpt_path, prepared, findings = start_finding_run(data, optim, trainer, out, resume)
    require_splits(prepared.series, ("train", "validation", *(("test",) if evaluate else ())), prepared.path)
    clip = load_model(encoder)
    check_compatible(clip, prepared)
    pl.seed_everything(seed, workers=True, verbose=False)
    train_set = FindingDataset(prepared, "train", findings, data.augment, seed)
    val_set = FindingDataset(prepared, "validation", findings)
    test_set = FindingDataset(prepared, "test", findings) if evaluate else None

    config = {"data": as_dict(data), "encoder": encoder, "features": features, "hidden": hidden, "dropout": dropout,
              "optim": as_dict(optim), "trainer": as_dict(trainer_cfg), "evaluate": evaluate,
              "threshold_method": threshold_method, "n_bootstrap": n_bootstrap, "out": out, "seed": seed,
              "resume": resume}
    write_run_config(run_dir, config, seed, findings=findings)
    model = ClassFineModel(clip, findings, features, hidden, dropout)
    module = MultiLabelModule(model, positive_weights(train_set.targets), optim)
    pl_trainer = build_trainer(trainer_cfg, run_dir)
    loaders = training_loaders(pl_trainer, train_set, val_set, data.batch_size, data.eval_batch_size, data.num_workers, seed)
    pl_trainer.fit(module, *loaders, ckpt_path=ckpt_path, weights_only=True)
    pl_trainer.save_checkpoint(run_dir / CHECKPOINTS / LAST, weights_only=False)
    if not pl_trainer.is_global_zero:
        return run_dir

    checkpoint = restore_best(module, pl_trainer)
    device, batch = device_of(), data.eval_batch_size or data.batch_size
    val = scan_scores(val_set.table, val_set.targets, predict_scores(model, val_set, batch, device), findings)
    thresholds = validation_thresholds(val, findings, threshold_method)
    extra = {"run": str(run_dir.resolve()), "dataset": str(prepared.path.resolve()), "checkpoint": checkpoint,
             "global_step": int(pl_trainer.global_step), "config": config,
             "classfine": {"thresholds": thresholds, "threshold_method": threshold_method}}
    save_classfine(model.cpu(), run_dir / "bundle", preprocessing_from_card(prepared.card), extra)
    if test_set is not None:
        test = scan_scores(test_set.table, test_set.targets, predict_scores(model, test_set, batch, device), findings)
        metrics, predictions = finding_results(val, test, findings, threshold_method, n_bootstrap, seed)
        write_results(run_dir / "eval", metrics, predictions, run_info("train probe", config, seed))
        print(f"ClassFine: test macro AUROC {metrics['macro']['auroc']} over {len(findings)} finding(s) -> {run_dir / 'eval'}")
    return run_dir
