"""``radlens train classfine``: ClassFine on a prepared dataset, then test metrics with validation thresholds.

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


def train_classfine(
    bundle: str,
    prepared: str,
    out: str,
    data: FindingDataConfig = FindingDataConfig(),
    features: Literal["embedding", "pooled"] = "embedding",
    hidden: int = 0,
    dropout: float = 0.0,
    train_encoder: bool = False,
    optim: OptimConfig | None = None,
    trainer: TrainerConfig | None = None,
    evaluate: bool = True,
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a ClassFine head (linear or MLP) on a CLIP image encoder, frozen or fine-tuned; returns the run folder.

    Args:
        bundle: CLIP bundle folder (or run folder, registry name, hub id) whose image encoder is used.
        prepared: prepared dataset with finding labels (train, validation and, to evaluate, test splits).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles, ``eval/``).
        data: findings (default: all in the card), batches, augmentation.
        features: ``embedding`` (CLIP space) or ``pooled`` (image tower before the projection).
        hidden: hidden width of a two-layer MLP head (0: a linear head).
        dropout: dropout before the head's layers.
        train_encoder: fine-tune the image tower with the head (full supervised fine-tuning from the CLIP
            weights) instead of keeping it frozen.
        optim: AdamW + warm-up/cosine (default: lr 1e-3 for a head alone, 3e-4 with ``train_encoder``; weight
            decay 1e-4, 10 warm-up steps).
        trainer: steps, time budget, devices, precision, validation/checkpoint intervals (monitor: val/loss).
        evaluate: score the test split with thresholds chosen on validation (needs a test split).
        threshold_method: ``youden`` or ``f1`` on the validation scores.
        n_bootstrap: patient-bootstrap resamples for the confidence intervals.
        seed: seeds the head, batch order and augmentation.
        resume: ``latest`` or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.labelled import FindingDataset, collate_findings, require_splits
    from radlens.data.modules import LabelledImageDataModule
    from radlens.metrics.findings import scan_scores
    from radlens.models.bundle import load_model
    from radlens.models.classfine import ClassFineModel
    from radlens.models.compat import check_compatible
    from radlens.train.finding_eval import FindingEvaluation
    from radlens.train.multilabel import MultiLabelTask, device_of, positive_weights, predict_scores, start_finding_run
    from radlens.train.run import run

    optim = optim or OptimConfig(lr=3e-4 if train_encoder else 1e-3, weight_decay=1e-4, warmup_steps=10)
    trainer_cfg, dataset, findings = start_finding_run(prepared, data, optim, trainer, out, resume)
    require_splits(dataset.series, ("train", "validation", *(("test",) if evaluate else ())), dataset.path)
    clip = load_model(bundle, kind="clip")
    check_compatible(clip, dataset)
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = LabelledImageDataModule(dataset, findings, data.batch_size, data.eval_batch_size, data.num_workers,
                                         data.augment if data.augment.enabled else None, seed)
    config = {"bundle": bundle, "prepared": prepared, "out": out, "data": as_dict(data), "features": features,
              "hidden": hidden, "dropout": dropout, "train_encoder": train_encoder, "optim": as_dict(optim), "trainer": as_dict(trainer_cfg),
              "evaluate": evaluate, "threshold_method": threshold_method, "n_bootstrap": n_bootstrap, "seed": seed,
              "resume": resume}
    model = ClassFineModel(clip, findings, features, hidden, dropout, train_encoder)
    task = MultiLabelTask(model, positive_weights(datamodule.train_set.targets), optim)
    device, batch = device_of(), data.eval_batch_size or data.batch_size
    sets = {"validation": datamodule.val_set}

    def scores(split: str) -> Any:
        ds = sets.get(split) or FindingDataset(dataset, split, findings)
        return scan_scores(ds.table, ds.targets, predict_scores(model, ds, collate_findings, batch, device), findings)

    evaluation = FindingEvaluation("classfine", scores, findings, threshold_method, n_bootstrap, seed)
    result = run(task, datamodule, trainer_cfg, out, resume, config, seed, {"findings": findings}, evaluation)
    if result.is_global_zero and evaluate:
        evaluation.write(result.folder, "train classfine", config, "ClassFine")
    return result.folder
