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
    data: FindingDataConfig,
    init_from: str,
    out: str = "runs/vocabfine",
    prompts: str | None = None,
    optim: OptimConfig | None = None,
    trainer: TrainerConfig | None = None,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Fine-tune a CLIP bundle on present/absent prompt pairs; returns the run folder (``best/``, ``last/`` bundles).

    Args:
        data: prepared dataset with finding labels, findings (default: all), batches, augmentation.
        init_from: the CLIP bundle folder (or registry name / hub id) to fine-tune.
        out: the run folder.
        prompts: a prompt file or packaged set (e.g. ``ctrate``) giving each finding's phrasings;
            default: "{finding} is present." / "{finding} is not present.".
        optim: AdamW + warm-up/cosine (fine-tuning wants a small lr).
        trainer: steps, devices, precision, validation/checkpoint intervals (monitor: val/loss).
        seed: seeds batch order and augmentation.
        resume: ``latest`` or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.labelled import require_splits
    from radlens.data.modules import LabelledImageDataModule, has_split
    from radlens.models.bundle import load_model
    from radlens.models.compat import check_compatible
    from radlens.train.multilabel import start_finding_run
    from radlens.train.run import run
    from radlens.train.vocabfine_task import VocabFineTask

    optim = optim or OptimConfig(lr=1e-5, warmup_steps=50)
    trainer_cfg, prepared, findings = start_finding_run(data, optim, trainer, out, resume)
    pair_prompts = prompt_set(findings, prompts, prepared.path)
    require_splits(prepared.series, ("train",), prepared.path)
    if not has_split(prepared, "validation") and trainer_cfg.keep_best:
        raise InputError(prepared.path, "split 'validation' is empty: add one, or set trainer.keep_best 0")
    model = load_model(init_from, kind="clip").train()
    check_compatible(model, prepared)
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = LabelledImageDataModule(prepared, findings, data.batch_size, data.eval_batch_size, data.num_workers,
                                         data.augment if data.augment.enabled else None, seed)
    config = {"data": as_dict(data), "init_from": init_from, "prompts": prompts, "optim": as_dict(optim),
              "trainer": as_dict(trainer_cfg), "out": out, "seed": seed, "resume": resume}
    return run(VocabFineTask(model, pair_prompts, optim), datamodule, trainer_cfg, out, resume, config, seed,
               {"findings": findings}).folder
