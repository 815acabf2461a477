"""``radlens train clip``: contrastive image-text training on a prepared dataset, end to end.

Everything that can be wrong with the inputs (config values, the dataset folder, image shape
vs model, text length vs context) is checked before the Trainer starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import InputError
from radlens.train.config import ClipDataConfig, LossConfig, OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.engine import CHECKPOINTS, LAST, best_checkpoint, build_trainer, resolve_resume, write_run_config

if TYPE_CHECKING:
    from radlens.data.datasets import ClipDataset
    from radlens.data.prepared import PreparedDataset
    from radlens.models.clip import CLIPModel

_TOKENIZE_CHUNK = 512
TOKENIZER = "tokenizer"


def train_clip(
    data: ClipDataConfig,
    model: str = "tiny-vit2d",
    optim: OptimConfig = OptimConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    loss: LossConfig = LossConfig(),
    out: str = "runs/clip",
    seed: int = 0,
    resume: str | None = None,
    init_from: str | None = None,
) -> Path:
    """Train a CLIP model on a prepared dataset; returns the run folder.

    Args:
        data: dataset folder, text column, batches, sampler, augmentation.
        model: registry name or JSON architecture config (ignored with ``init_from``).
        optim: AdamW + warm-up/cosine schedule.
        trainer: devices, strategy, precision, steps, validation and checkpoint intervals.
        loss: contrastive loss mode and its parameters.
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles).
        seed: seeds weights, batch order and augmentation.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
        init_from: a model bundle folder to start from instead of a fresh ``model``.
    """
    import lightning.pytorch as pl
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from radlens.data.prepared import PreparedDataset

    trainer_cfg = trainer
    validate(data, optim, trainer_cfg)
    run_dir = Path(out)
    ckpt_path = resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    prepared = PreparedDataset(data.path)
    train_set, val_set = _datasets(prepared, data, seed)
    if loss.mode == "findings" and train_set.findings.shape[1] == 0:
        raise InputError(prepared.path, "loss.mode 'findings' needs finding labels (the card's 'findings' columns); "
                                        "this dataset has none")
    clip = _model(model, init_from, train_set.texts)
    # DDP re-runs this function in ranks > 0 once rank 0 is in fit(): they take rank 0's tokenizer.
    follower = rank_zero_only.rank > 0  # type: ignore[attr-defined]
    _keep_tokenizer(clip, run_dir / TOKENIZER, reuse=ckpt_path is not None or follower)
    check_inputs(clip, prepared, [train_set, *([val_set] if val_set else [])])

    config = {
        "data": as_dict(data), "model": model, "optim": as_dict(optim), "trainer": as_dict(trainer_cfg),
        "loss": as_dict(loss), "out": str(out), "seed": seed, "resume": resume, "init_from": init_from,
    }
    write_run_config(run_dir, config, seed)

    from radlens.train.clip_module import ClipModule

    module = ClipModule(clip, loss, optim)
    pl_trainer = build_trainer(trainer_cfg, run_dir)
    train_loader, val_loader = _loaders(pl_trainer, clip, train_set, val_set, data, seed)
    pl_trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
    pl_trainer.save_checkpoint(run_dir / CHECKPOINTS / LAST, weights_only=False)
    if pl_trainer.is_global_zero:
        save_bundles(module, pl_trainer, run_dir, prepared, config)
    return run_dir


def _datasets(prepared: "PreparedDataset", data: ClipDataConfig, seed: int) -> tuple["ClipDataset", "ClipDataset | None"]:
    from radlens.data.datasets import ClipDataset

    if prepared.card.get("array_shape") is None:
        raise InputError(prepared.path, "arrays of different shapes (card array_shape is null): a batch needs one shape")
    augment = data.augment if data.augment.enabled else None
    train = ClipDataset(prepared, "train", data.text_column, augment, data.caption_dropout, seed,
                        sentence_dropout=data.sentence_dropout)
    table = prepared.slices if prepared.dims == 2 else prepared.series
    has_val = table is not None and (table["split"] == "validation").any()
    val = ClipDataset(prepared, "validation", data.eval_text_column or data.text_column) if has_val else None
    return train, val


def _model(name: str, init_from: str | None, texts: list[str]) -> "CLIPModel":
    """A fresh model (its scratch tokenizer trained on the training texts) or one loaded from a bundle."""
    if init_from:
        from radlens.models.bundle import load_bundle

        return load_bundle(init_from).train()
    from radlens.models.registry import build_clip

    return build_clip(name, texts=sorted(set(texts)))


def _keep_tokenizer(model: "CLIPModel", folder: Path, reuse: bool) -> None:
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


def check_inputs(model: "CLIPModel", prepared: "PreparedDataset", datasets: list["ClipDataset"]) -> None:
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


def _loaders(
    trainer: Any, model: "CLIPModel", train_set: "ClipDataset", val_set: "ClipDataset | None", data: ClipDataConfig, seed: int
) -> tuple[Any, Any]:
    """Seeded, rank-aware, resumable train loader; plain ordered validation loader (whole split per rank)."""
    import torch
    from torch.utils.data import DataLoader

    from radlens.data.datasets import ClipCollate
    from radlens.data.samplers import ClipBatchSampler, resumable_loader

    groups = None
    if data.sampler != "random":
        groups = train_set.group_ids("series" if data.sampler == "distinct_series" else "label")
    sampler = ClipBatchSampler(
        len(train_set), data.batch_size, seed=seed, groups=groups, rank=trainer.global_rank, world_size=trainer.world_size
    )
    collate = ClipCollate(model.tokenize)
    common: dict[str, Any] = {
        "collate_fn": collate,
        "num_workers": data.num_workers,
        "persistent_workers": data.num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }

    def progress() -> int:
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    # Its own generator: creating iterators must not consume the global RNG (resume exactness).
    train = resumable_loader(
        train_set, sampler, progress, generator=torch.Generator().manual_seed(seed), **common
    )
    val = None
    if val_set is not None:
        val = DataLoader(val_set, batch_size=data.eval_batch_size or data.batch_size, shuffle=False, **common)
    return train, val


def save_bundles(module: Any, trainer: Any, run_dir: Path, prepared: "PreparedDataset", config: dict[str, Any]) -> None:
    """``last/`` from the final weights, ``best/`` from the best checkpoint (``last`` when none)."""
    import torch

    from radlens.models.bundle import save_bundle

    preprocessing = preprocessing_from_card(prepared.card)
    extra = {"run": str(run_dir.resolve()), "dataset": str(prepared.path.resolve()), "config": config,
             "global_step": int(trainer.global_step)}
    model = module.model
    save_bundle(model, run_dir / "last", preprocessing, {**extra, "checkpoint": "last"})
    best = best_checkpoint(trainer)
    if best is not None and best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        score = trainer.checkpoint_callbacks[-1].best_model_score
        extra = {**extra, "checkpoint": best.name, "monitor": config["trainer"]["monitor"],
                 "score": None if score is None else float(score)}
    save_bundle(model, run_dir / "best", preprocessing, {**extra, "checkpoint": extra.get("checkpoint", "last")})


def preprocessing_from_card(card: dict[str, Any]) -> dict[str, Any]:
    """What a model's inputs must look like, from the dataset card: shape, dims, intensity, prepare settings."""
    prepare_cfg = card.get("config") or {}
    out = {k: card[k] for k in ("dims", "modality", "array_shape", "dtype", "intensity") if k in card}
    out["prepare"] = {k: prepare_cfg[k] for k in ("spatial", "intensity", "slicing", "already_hu") if k in prepare_cfg}
    return out
