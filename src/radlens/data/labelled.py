"""Finding labels of a prepared dataset as data: name checks, 0/1 targets, labelled images and reports.

Shared by ClassFine, VocabFine, the report labeller and the logistic probe: every finding name is
checked against the card before any work, every split used must have items, and a label column
must hold only 0/1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.data.augment import AugmentConfig
from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.prepared import PreparedDataset

@dataclass
class FindingDataConfig:
    """Which findings (default: all in the card) and how batches are drawn; the prepared dataset is the
    command's DATA argument.

    Attributes:
        findings: the findings to train on (default: every finding of the dataset card).
        batch_size: scans per training batch.
        eval_batch_size: scans per validation/prediction batch (default: batch_size).
        num_workers: DataLoader worker processes (0: load in the training process).
        augment: training augmentation (off by default for fine-tuning).
    """

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


def targets_of(table: pd.DataFrame, findings: Sequence[str], where: Any) -> np.ndarray:
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


def require_splits(table: pd.DataFrame, splits: Sequence[str], where: Any) -> None:
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
        prepared: PreparedDataset,
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


class ReportCollate:
    """Tokenise report items ``{"text", "targets", "index"}`` into a :class:`MultiLabelModule` batch."""

    def __init__(self, tokenize: Any) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        return {
            "inputs": self.tokenize([it["text"] for it in items]),
            "targets": torch.stack([torch.as_tensor(it["targets"]) for it in items]),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }


class ReportDataset:
    """Reports and their (N, F) targets; keys are indices or ``(index, epoch)`` from the batch sampler."""

    def __init__(self, texts: Sequence[str], targets: np.ndarray) -> None:
        self.texts, self.targets = list(texts), np.asarray(targets, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = int(key[0]) if isinstance(key, tuple) else int(key)
        return {"text": self.texts[index], "targets": self.targets[index], "index": index}
