"""VocabFine (CT-CLIP): fine-tune a CLIP model on per-finding present/absent prompt pairs.

For every training scan and finding, the image embedding is scored against the pair
("{finding} is present." / "{finding} is not present."; or the phrasings of a prompt file) at
the model's temperature, and cross-entropy pulls it toward the true state. Both towers train;
the prompts are re-encoded every step (F pairs, short texts), so the text tower learns the
vocabulary. The result is a plain CLIP bundle that zero-shot evaluation uses as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.data.labelled import FindingDataConfig
from radlens.errors import InputError
from radlens.metrics.findings import ThresholdMethod
from radlens.train.config import OptimConfig, TrainerConfig, as_dict

if TYPE_CHECKING:
    from radlens.models.prompts import PromptSet

PRESENT, ABSENT = "{finding} is present.", "{finding} is not present."


def prompt_set(findings: Sequence[str], prompts: str | None, where: Any) -> PromptSet:
    """The prompts of ``findings``: from a prompt file / packaged set, or CT-CLIP's pair template."""
    from radlens.models.prompts import PromptSet, load_prompts

    if prompts is None:
        return PromptSet(
            "vocabfine", tuple(findings), tuple((PRESENT.format(finding=f),) for f in findings),
            tuple((ABSENT.format(finding=f),) for f in findings),
        )
    loaded = load_prompts(prompts)
    missing = [f for f in findings if f not in loaded.findings]
    if missing:
        raise InputError(where, f"prompt set {prompts!r} has no prompts for finding(s) {missing}")
    return loaded.subset(findings)


def train_vocabfine(
    bundle: str,
    prepared: str,
    out: str,
    data: FindingDataConfig = FindingDataConfig(),
    prompts: str | None = None,
    optim: OptimConfig | None = None,
    trainer: TrainerConfig | None = None,
    evaluate: bool = True,
    threshold_method: ThresholdMethod = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Fine-tune a CLIP bundle on present/absent prompt pairs, then score the test split zero-shot; returns the run folder.

    The ``best/`` bundle is a plain CLIP bundle (``evaluate zeroshot`` uses it as is) that also holds
    the validation thresholds; ``eval/`` holds its zero-shot test metrics with those thresholds
    (metrics.json, predictions.csv, run.json), as ClassFine and the labeller write theirs.

    Args:
        bundle: the CLIP bundle folder (or run folder, registry name, hub id) to fine-tune.
        prepared: prepared dataset with finding labels (train, validation and, to evaluate, test splits).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles, ``eval/``).
        data: findings (default: all in the card), batches, augmentation.
        prompts: a packaged prompt set ({pairs}) or a YAML prompt file giving each finding's
            phrasings; default: "<finding> is present." / "<finding> is not present.".
        optim: AdamW + warm-up/cosine (default: lr 1e-5, 50 warm-up steps: fine-tuning wants a small lr).
        trainer: steps, time budget, devices, precision, validation/checkpoint intervals (monitor: val/loss).
        evaluate: score the test split zero-shot with thresholds chosen on validation (needs a test split).
        threshold_method: ``youden`` or ``f1`` on the validation scores.
        n_bootstrap: patient-bootstrap resamples for the confidence intervals.
        seed: seeds batch order and augmentation.
        resume: ``latest`` or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.labelled import FindingDataset, collate_findings, require_splits
    from radlens.data.modules import LabelledImageDataModule, has_split
    from radlens.metrics.findings import scan_scores
    from radlens.models.bundle import load_model
    from radlens.models.compat import check_compatible
    from radlens.train.finding_eval import FindingEvaluation
    from radlens.train.multilabel import device_of, predict_scores, start_finding_run
    from radlens.train.run import run
    from radlens.train.vocabfine_task import PairScorer, VocabFineTask

    optim = optim or OptimConfig(lr=1e-5, warmup_steps=50)
    trainer_cfg, dataset, findings = start_finding_run(prepared, data, optim, trainer, out, resume)
    pair_prompts = prompt_set(findings, prompts, dataset.path)
    require_splits(dataset.series, ("train", *(("validation", "test") if evaluate else ())), dataset.path)
    if not has_split(dataset, "validation") and trainer_cfg.keep_best:
        raise InputError(dataset.path, "split 'validation' is empty: add one, or set trainer.keep_best 0")
    model = load_model(bundle, kind="clip").train()
    check_compatible(model, dataset)
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = LabelledImageDataModule(dataset, findings, data.batch_size, data.eval_batch_size, data.num_workers,
                                         data.augment if data.augment.enabled else None, seed)
    config = {"bundle": bundle, "prepared": prepared, "out": out, "data": as_dict(data), "prompts": prompts,
              "optim": as_dict(optim), "trainer": as_dict(trainer_cfg), "evaluate": evaluate,
              "threshold_method": threshold_method, "n_bootstrap": n_bootstrap, "seed": seed, "resume": resume}
    task = VocabFineTask(model, pair_prompts, optim)
    batch = data.eval_batch_size or data.batch_size

    def scores(split: str) -> Any:
        ds = FindingDataset(dataset, split, findings)
        probs = predict_scores(PairScorer(task), ds, collate_findings, batch, device_of())
        return scan_scores(ds.table, ds.targets, probs, findings)

    evaluation = FindingEvaluation("vocabfine", scores, findings, threshold_method, n_bootstrap, seed)
    result = run(task, datamodule, trainer_cfg, out, resume, config, seed, {"findings": findings},
                 evaluation if evaluate else None)
    if result.is_global_zero and evaluate:
        evaluation.write(result.folder, "train vocabfine", config, "VocabFine zero-shot")
    return result.folder


def _prompt_help() -> None:
    """--prompts help names every packaged pairs set, read from the package (a new one appears by itself)."""
    from radlens.models.prompts import packaged_prompt_sets

    train_vocabfine.__doc__ = (train_vocabfine.__doc__ or "").replace("{pairs}", ", ".join(packaged_prompt_sets("pairs")))


_prompt_help()
