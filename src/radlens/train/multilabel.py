"""Multi-label finding tasks (ClassFine, the report labeller, VocabFine's validation) and their inference.

Batches are ``{"inputs": kwargs of the model's forward, "targets": (B, F) 0/1, "index": (B,)}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from radlens.data.labelled import FindingDataConfig
from radlens.metrics.findings import mean_auroc
from radlens.train.config import OptimConfig, TrainerConfig
from radlens.train.task import Step, TaskModule

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset


class FindingScoresTask(TaskModule):
    """A task validated on per-finding scores: ``val/loss`` (default monitor) and ``val/mean_auroc``.

    Subclasses' :meth:`step` keep ``{"scores": (B, F), "targets": (B, F)}`` in validation.
    """

    metrics = ("val/loss", "val/mean_auroc")
    larger_is_better = frozenset({"val/mean_auroc"})

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        scores = torch.cat([v["scores"] for v in kept]).numpy()
        targets = torch.cat([v["targets"] for v in kept]).numpy()
        return {"mean_auroc": mean_auroc(targets, scores)}


class MultiLabelTask(FindingScoresTask):
    """Class-weighted BCE (``pos_weight`` per finding) on the model's logits; only trainable
    parameters reach the optimiser (a frozen encoder stays out)."""

    def __init__(self, model: nn.Module, pos_weight: np.ndarray, optim: OptimConfig | None = None) -> None:
        super().__init__(model, optim)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        logits = self.model(**batch["inputs"]).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"], pos_weight=self.pos_weight)
        keep = None if stage == "train" else {"scores": logits.sigmoid().cpu(), "targets": batch["targets"].cpu()}
        return Step(loss, keep=keep)


def positive_weights(targets: np.ndarray) -> np.ndarray:
    """BCE ``pos_weight`` per finding: negatives / positives in training (1 where a class is absent)."""
    pos = targets.sum(0)
    neg = len(targets) - pos
    return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0).astype(np.float32)


def device_of(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def predict_scores(
    model: nn.Module, dataset: Any, collate: Any, batch_size: int = 8, device: torch.device | str = "cpu"
) -> np.ndarray:
    """(N, F) probabilities for every item of ``dataset`` (batches as :class:`MultiLabelTask` takes them)."""
    from torch.utils.data import DataLoader

    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
            out.append(model(**inputs).float().sigmoid().cpu().numpy())
    return np.concatenate(out)


def start_finding_run(
    prepared: str, data: FindingDataConfig, optim: OptimConfig, trainer: TrainerConfig | None, out: str,
    resume: str | None,
) -> tuple[TrainerConfig, PreparedDataset, list[str]]:
    """The checks and look-ups every finding trainer (classfine, vocabfine, labeller) starts with, before any work:
    config values, the run folder (a finished run is not overwritten without ``resume``), the dataset,
    the findings. Returns ``(trainer config, prepared dataset, selected findings)``."""
    from radlens.data.labelled import select_findings
    from radlens.io.prepared import PreparedDataset
    from radlens.train.config import validate
    from radlens.train.run import choose_monitor, resolve_resume

    trainer = trainer or TrainerConfig()
    validate(optim, trainer, [(data.batch_size >= 1, f"data.batch_size must be >= 1, got {data.batch_size}"),
                              (bool(prepared), "prepared: the prepared dataset folder is required"),
                              (data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}")])
    choose_monitor(FindingScoresTask, trainer)
    resolve_resume(Path(out), resume)
    dataset = PreparedDataset(prepared)
    return trainer, dataset, select_findings(dataset.card, data.findings, dataset.path / "dataset.json")
