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

from radlens.errors import InputError
from radlens.train.config import OptimConfig, TrainerConfig, as_dict
from radlens.train.probe_data import FindingDataConfig

if TYPE_CHECKING:
    import torch

    from radlens.evaluate.zeroshot import PromptSet
    from radlens.models.clip import CLIPModel

PRESENT, ABSENT = "{finding} is present.", "{finding} is not present."


def prompt_set(findings: Sequence[str], prompts: str | None, where: Any) -> PromptSet:
    """The prompts of ``findings``: from a prompt file / packaged set, or CT-CLIP's pair template."""
    from radlens.evaluate.zeroshot import PromptSet, load_prompts

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


def vocabfine_module(model: CLIPModel, prompts: PromptSet, optim: OptimConfig | None = None) -> Any:
    """The LightningModule (built here so that ``import radlens.train.vocabfine`` stays light)."""
    import torch
    import torch.nn.functional as F

    from radlens.train.probe_module import FindingScoresModule

    class VocabFineModule(FindingScoresModule):
        """Pair cross-entropy over (image, finding); logs ``val/loss`` and ``val/mean_auroc`` (zero-shot).

        Reuses :class:`ClipModule`'s optimiser, schedule and resumable RNG checkpointing.
        """

        def __init__(self) -> None:
            super().__init__(model, None, optim)
            texts = [t for pair in zip(prompts.present, prompts.absent) for side in pair for t in side]
            tokens = model.tokenize(texts)
            # (2F, T) averaging matrix: row 2f is finding f's present phrasings, row 2f+1 its absent ones.
            sizes = [len(side) for pair in zip(prompts.present, prompts.absent) for side in pair]
            rows = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
            average = torch.zeros(len(sizes), len(texts))
            average[rows, torch.arange(len(texts))] = 1.0 / torch.tensor(sizes, dtype=torch.float32)[rows]
            self.register_buffer("prompt_ids", tokens["input_ids"], persistent=False)
            self.register_buffer("prompt_mask", tokens["attention_mask"], persistent=False)
            self.register_buffer("prompt_average", average, persistent=False)

        def pair_logits(self, images: torch.Tensor) -> torch.Tensor:
            """(B, F, 2) logits: [..., 0] present, [..., 1] absent."""
            img = self.model.encode_image(images)
            txt = F.normalize(self.prompt_average @ self.model.encode_text(self.prompt_ids, self.prompt_mask), dim=-1)
            return (self.model.logit_scale * img @ txt.T).view(len(img), -1, 2)

        def _pair_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.pair_logits(batch["inputs"]["images"])
            target = (1 - batch["targets"]).long()  # class 0 = present
            return F.cross_entropy(logits.reshape(-1, 2).float(), target.reshape(-1)), logits

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            loss, _ = self._pair_loss(batch)
            n = len(batch["targets"])
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
            self.log("train/logit_scale", self.model.logit_scale.detach(), on_step=True, on_epoch=False, batch_size=n)
            return loss

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
            loss, logits = self._pair_loss(batch)
            self.log("val/loss", loss, on_epoch=True, batch_size=len(batch["targets"]))
            self._val.append({"scores": logits.float().softmax(-1)[..., 0].cpu(), "targets": batch["targets"].cpu()})

    return VocabFineModule()


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

    from radlens.evaluate.embed import check_compatible
    from radlens.models.bundle import load_model
    from radlens.train.clip import save_bundles
    from radlens.train.engine import CHECKPOINTS, LAST, build_trainer, write_run_config
    from radlens.train.probe_data import FindingDataset, require_splits, start_finding_run, training_loaders

    optim = optim or OptimConfig(lr=1e-5, warmup_steps=50)
    trainer_cfg, run_dir, ckpt_path, prepared, findings = start_finding_run(data, optim, trainer, out, resume)
    pair_prompts = prompt_set(findings, prompts, prepared.path)
    require_splits(prepared.series, ("train",), prepared.path)
    has_val = bool((prepared.series["split"] == "validation").any())
    if not has_val and trainer_cfg.keep_best:
        raise InputError(prepared.path, "split 'validation' is empty: add one, or set trainer.keep_best 0")
    model = load_model(init_from).train()
    check_compatible(model, prepared)
    pl.seed_everything(seed, workers=True, verbose=False)
    train_set = FindingDataset(prepared, "train", findings, data.augment, seed)
    val_set = FindingDataset(prepared, "validation", findings) if has_val else None

    config = {"data": as_dict(data), "init_from": init_from, "prompts": prompts, "optim": as_dict(optim),
              "trainer": as_dict(trainer_cfg), "out": out, "seed": seed, "resume": resume}
    write_run_config(run_dir, config, seed, findings=findings)
    module = vocabfine_module(model, pair_prompts, optim)
    pl_trainer = build_trainer(trainer_cfg, run_dir)
    loaders = training_loaders(pl_trainer, train_set, val_set, data.batch_size, data.eval_batch_size, data.num_workers, seed)
    pl_trainer.fit(module, *loaders, ckpt_path=ckpt_path, weights_only=True)
    pl_trainer.save_checkpoint(run_dir / CHECKPOINTS / LAST, weights_only=False)
    if pl_trainer.is_global_zero:
        save_bundles(module, pl_trainer, run_dir, prepared, config)
    return run_dir
