"""Finding labels of a prepared dataset as training data: name checks, targets, image datasets, loaders.

Shared by ClassFine, VocabFine and the report labeller (and the logistic probe's label lookup):
every finding name is checked against the card before any work, every split used must have
items, and a label column must hold only 0/1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.data.augment import AugmentConfig
from radlens.train.config import OptimConfig, TrainerConfig

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.data.prepared import PreparedDataset

MONITORS = ("val/loss", "val/mean_auroc")  # what the finding trainers log (FindingScoresModule)


@dataclass
class FindingDataConfig:
    """Which prepared dataset, which findings (default: all in the card) and how batches are drawn."""

    path: str = ""
    findings: list[str] | None = None
    batch_size: int = 8
    eval_batch_size: int | None = None
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(enabled=False))


def select_findings(card: dict[str, Any], requested: Sequence[str] | None, where: Any) -> list[str]:
    """The findings to use: ``requested`` (each must be in the card) or all of the card's, in card order."""
    known = [str(f) for f in card.get("findings") or []]
    if not known:
        raise InputError(where, "the dataset has no finding labels (card 'findings' is empty)")
    if requested is None:
        return known
    unknown = [f for f in requested if f not in known]
    if unknown:
        raise InputError(where, f"unknown finding(s) {unknown}; the dataset has: {', '.join(known)}")
    if not requested:
        raise ConfigError("findings: an empty list selects nothing (leave it out to use all findings)")
    return list(dict.fromkeys(requested))


def targets_of(table: "pd.DataFrame", findings: Sequence[str], where: Any) -> np.ndarray:
    """(N, F) float32 0/1 targets from the finding columns; InputError for missing or non-0/1 values."""
    missing = [f for f in findings if f not in table.columns]
    if missing:
        raise InputError(where, f"no label column for finding(s) {missing}")
    values = table[list(findings)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(where, f"finding {findings[col]!r} has a value other than 0/1 ({values[row, col]}) in {int(bad.any(1).sum())} row(s)")
    return values.astype(np.float32)


def positive_weights(targets: np.ndarray) -> np.ndarray:
    """BCE ``pos_weight`` per finding: negatives / positives in training (1 where a class is absent)."""
    pos = targets.sum(0)
    neg = len(targets) - pos
    return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0).astype(np.float32)


def require_splits(table: "pd.DataFrame", splits: Sequence[str], where: Any) -> None:
    """InputError naming the first of ``splits`` that has no rows."""
    counts = table["split"].value_counts()
    for split in splits:
        if int(counts.get(split, 0)) == 0:
            raise InputError(where, f"split {split!r} is empty (splits: {counts.to_dict()})")


class FindingDataset:
    """One split of a prepared dataset as ``{"image", "targets", "index"}`` items (slices or volumes).

    Images (and seeded training augmentation with ``(index, epoch)`` keys) come from
    :class:`radlens.data.datasets.ClipDataset`; targets are the series' finding columns.
    """

    def __init__(
        self,
        prepared: "PreparedDataset",
        split: str,
        findings: Sequence[str],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        from radlens.data.datasets import ClipDataset

        self.images = ClipDataset(prepared, split, "text", augment if augment and augment.enabled else None, seed=seed)
        self.table = self.images.table
        self.findings = list(findings)
        self.targets = targets_of(self.table, self.findings, prepared.path)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        item = self.images[key]
        return {"image": item["image"], "targets": torch.from_numpy(self.targets[item["index"]]), "index": item["index"]}


def collate_findings(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and targets of :class:`FindingDataset` items."""
    import torch

    return {
        "inputs": {"images": torch.stack([it["image"] for it in items])},
        "targets": torch.stack([it["targets"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


def training_loaders(
    trainer: Any, train_set: Any, val_set: Any, batch_size: int, eval_batch_size: int | None, num_workers: int,
    seed: int, collate: Any = collate_findings,
) -> tuple[Any, Any]:
    """Seeded, rank-aware, resumable train loader (radlens' batch sampler) and an ordered validation loader."""
    import torch
    from torch.utils.data import DataLoader

    from radlens.data.samplers import ClipBatchSampler, resumable_loader

    sampler = ClipBatchSampler(len(train_set), batch_size, seed=seed, rank=trainer.global_rank, world_size=trainer.world_size)
    common: dict[str, Any] = {"collate_fn": collate, "num_workers": num_workers, "persistent_workers": num_workers > 0,
                              "pin_memory": torch.cuda.is_available()}

    def progress() -> int:
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    train = resumable_loader(train_set, sampler, progress, generator=torch.Generator().manual_seed(seed), **common)
    val = DataLoader(val_set, batch_size=eval_batch_size or batch_size, shuffle=False, **common) if val_set is not None else None
    return train, val


def device_of(name: str = "auto") -> "torch.device":
    """``auto``: the GPU when there is one, else the CPU."""
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def trainer_for(cfg: Any, monitor: str, known: Sequence[str]) -> Any:
    """``cfg`` with a monitor this task logs: the CLIP default (``val/i2t_R@1``) becomes ``monitor``."""
    from dataclasses import replace

    from radlens.train.config import TrainerConfig

    if cfg.monitor == TrainerConfig.monitor:
        return replace(cfg, monitor=monitor)
    if cfg.monitor not in known:
        raise ConfigError(f"trainer.monitor {cfg.monitor!r} is not logged by this task; use one of {', '.join(known)}")
    return cfg


def validate_finding_config(data: FindingDataConfig, optim: Any, trainer: Any) -> None:
    """ConfigError before any work: the CLIP engine's optimiser/trainer checks plus this task's data checks."""
    from radlens.train.config import ClipDataConfig, validate

    if data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {data.batch_size}")
    validate(ClipDataConfig(path=data.path, batch_size=max(2, data.batch_size), num_workers=data.num_workers), optim, trainer)


def start_finding_run(
    data: FindingDataConfig, optim: OptimConfig, trainer: TrainerConfig | None, out: str, resume: str | None
) -> tuple[TrainerConfig, Path, Path | None, PreparedDataset, list[str]]:
    """The checks and look-ups every finding trainer (probe, vocabfine, labeller) starts with, before any work.

    Returns ``(trainer config monitoring val/loss by default, run folder, checkpoint to resume
    from or None, prepared dataset, selected findings)``.
    """
    from radlens.data.prepared import PreparedDataset
    from radlens.train.engine import resolve_resume

    trainer_cfg = trainer_for(trainer or TrainerConfig(), "val/loss", MONITORS)
    validate_finding_config(data, optim, trainer_cfg)
    run_dir = Path(out)
    ckpt_path = resolve_resume(run_dir, resume)
    prepared = PreparedDataset(data.path)
    findings = select_findings(prepared.card, data.findings, prepared.path / "dataset.json")
    return trainer_cfg, run_dir, ckpt_path, prepared, findings


def restore_best(module: Any, trainer: Any) -> str:
    """Load the best checkpoint's weights into ``module``; returns its file name (``last`` when none)."""
    import torch

    from radlens.train.engine import best_checkpoint

    best = best_checkpoint(trainer)
    if best is None or not best.is_file():
        return "last"
    module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
    return best.name
