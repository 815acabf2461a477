"""``radlens train clip``: contrastive image-text training on a prepared dataset, end to end.

Everything that can be wrong with the inputs (config values, the dataset folder, image shape
vs model, text length vs context) is checked before the Trainer starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from radlens.data.datasets import ClipDataConfig
from radlens.errors import ConfigError, InputError
from radlens.train.clip_zeroshot import METRICS, ZeroShotValConfig
from radlens.train.config import LossConfig, OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.run import resolve_resume, run

if TYPE_CHECKING:
    from radlens.data.datasets import ClipDataset
    from radlens.data.modules import ImageTextDataModule
    from radlens.io.prepared import PreparedDataset
    from radlens.models.clip import CLIPModel
    from radlens.train.clip_zeroshot import ZeroShotValidation

_TOKENIZE_CHUNK = 512
TOKENIZER = "tokenizer"


def train_clip(
    prepared: str,
    out: str,
    data: ClipDataConfig = ClipDataConfig(),
    model: str = "tiny-vit2d",
    optim: OptimConfig = OptimConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    loss: LossConfig = LossConfig(),
    val_zeroshot: ZeroShotValConfig = ZeroShotValConfig(),
    seed: int = 0,
    resume: str | None = None,
    init_from: str | None = None,
) -> Path:
    """Train a CLIP model on a prepared dataset; returns the run folder.

    Args:
        prepared: the prepared dataset folder (train split to learn, validation split to choose the best).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles).
        data: text column, batches, sampler, augmentation.
        model: registry name or JSON architecture config (ignored with ``init_from``).
        optim: AdamW + warm-up/cosine schedule.
        trainer: devices, strategy, precision, steps, time budget, validation and checkpoint intervals.
        loss: contrastive loss mode and its parameters.
        val_zeroshot: score every validation pass zero-shot with a prompt set, so that
            --trainer.monitor val/zeroshot_auroc (or val/zeroshot_bacc) keeps the checkpoint best at the task.
        seed: seeds weights, batch order and augmentation.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
        init_from: a model bundle folder to start from instead of a fresh ``model``.
    """
    import lightning.pytorch as pl
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from radlens.data.modules import ImageTextDataModule
    from radlens.io.prepared import PreparedDataset
    from radlens.train.clip_task import ClipTask

    validate(optim, trainer, [
        (bool(prepared), "prepared: the prepared dataset folder is required"),
        (data.batch_size >= 2, f"data.batch_size must be >= 2 for a contrastive loss, got {data.batch_size}"),
        (data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}"),
        (0.0 <= data.caption_dropout <= 1.0, f"data.caption_dropout must be in [0, 1], got {data.caption_dropout}"),
        (0.0 <= data.sentence_dropout < 1.0, f"data.sentence_dropout must be in [0, 1), got {data.sentence_dropout}"),
    ])
    wanted = (trainer.monitor or "").removeprefix("val/")
    if wanted in METRICS.values() and not val_zeroshot.prompts:
        raise ConfigError(f"trainer.monitor {trainer.monitor!r} needs --val_zeroshot.prompts (the prompt set to score with)")
    run_dir = Path(out)
    ckpt_path = resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = PreparedDataset(prepared)
    datamodule = ImageTextDataModule(dataset, data, seed)
    if loss.mode == "findings" and datamodule.train_set.findings.shape[1] == 0:
        raise InputError(dataset.path, "loss.mode 'findings' needs finding labels (the card's 'findings' columns); "
                                       "this dataset has none")
    clip = _model(model, init_from, datamodule.train_set.texts)
    # DDP re-runs this function in ranks > 0 once rank 0 is in fit(): they take rank 0's tokenizer.
    follower = rank_zero_only.rank > 0  # type: ignore[attr-defined]
    _keep_tokenizer(clip, run_dir / TOKENIZER, reuse=ckpt_path is not None or follower)
    check_inputs(clip, dataset, [s for s in (datamodule.train_set, datamodule.val_set) if s is not None])
    datamodule.tokenize = clip.tokenize
    zeroshot = _zeroshot_validation(datamodule, val_zeroshot, wanted)

    config = {
        "prepared": str(prepared), "out": str(out), "data": as_dict(data), "model": model, "optim": as_dict(optim),
        "trainer": as_dict(trainer), "loss": as_dict(loss),
        "val_zeroshot": as_dict(val_zeroshot), "seed": seed, "resume": resume, "init_from": init_from,
    }
    run(ClipTask(clip, loss, optim, zeroshot), datamodule, trainer, run_dir, resume, config, seed)
    return run_dir


def _zeroshot_validation(datamodule: ImageTextDataModule, cfg: ZeroShotValConfig, monitor: str) -> ZeroShotValidation | None:
    """The zero-shot scorer of the validation split (None without ``val_zeroshot.prompts``)."""
    if not cfg.prompts:
        return None
    from radlens.train.clip_zeroshot import ZeroShotValidation

    if datamodule.val_set is None:
        raise ConfigError("val_zeroshot needs a validation split; this dataset has none")
    scorer = ZeroShotValidation(datamodule.val_set, cfg)
    if monitor in METRICS.values() and monitor != scorer.metric:
        raise ConfigError(f"trainer.monitor val/{monitor} does not fit prompt set {cfg.prompts!r}, which logs val/{scorer.metric}")
    return scorer


def _model(name: str, init_from: str | None, texts: list[str]) -> CLIPModel:
    """A fresh model (its scratch tokenizer trained on the training texts) or one loaded from a bundle."""
    if init_from:
        from radlens.models.bundle import load_model

        return load_model(init_from, kind="clip").train()
    from radlens.models.registry import build_model

    model = build_model(name, texts=sorted(set(texts)))
    if model.config["kind"] != "clip":
        raise InputError(name, f"a {model.config['kind']} config; train clip needs a clip model")
    return model


def _keep_tokenizer(model: CLIPModel, folder: Path, reuse: bool) -> None:
    """Save the run's tokenizer at the start; on resume (and in DDP ranks > 0), use the saved one.

    A from-scratch WordPiece vocabulary is not reproducible token for token (the trainer breaks
    ties in hash order), so a resumed run or another rank must not retrain it: the checkpoint's
    embedding rows belong to the saved vocabulary.
    """
    if not reuse or not folder.is_dir():
        model.text.tokenizer.save_pretrained(folder)
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.model_max_length = model.text.context_length
    if len(tokenizer) != len(model.text.tokenizer):
        model.text.model.resize_token_embeddings(len(tokenizer))
    model.text.tokenizer = tokenizer


def check_inputs(model: CLIPModel, prepared: PreparedDataset, datasets: list[ClipDataset]) -> None:
    """InputError now, not mid-training: image shape vs the model, every text vs the context length."""
    expected = tuple(model.input_shape)
    got = (1, *(int(s) for s in prepared.card["array_shape"]))
    if got != expected:
        raise InputError(
            prepared.path,
            f"items have shape {got} (channel first) but the model takes {expected}; prepare the dataset to "
            "the model's input shape or choose a model for this shape",
        )
    for ds in datasets:
        unique = sorted(set(ds.texts))
        for lo in range(0, len(unique), _TOKENIZE_CHUNK):
            try:
                model.tokenize(unique[lo : lo + _TOKENIZE_CHUNK])
            except InputError as err:
                raise InputError(prepared.path, f"split {ds.split!r}, column {ds.text_column!r}: {err.reason}") from err
