"""The attention-MIL task: multi-label BCE over bags (missing labels skipped), head configs, inference.

Batches are :func:`radlens.data.bags.collate_bags`'s ``{"feats": (B, N, D), "mask": (B, N),
"targets": (B, C) 0/1/NaN, "index", "slice_index"}``; NaN marks a label that is not known for a
bag (an empty cell of the clinical table) and takes no part in the loss or the metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.metrics.findings import score_metrics
from radlens.train.multilabel import MultiLabelTask
from radlens.train.task import Step

# ``head`` shortcuts of ``radlens train mil``; any other value is a registry name or a JSON config file.
HEADS: dict[str, dict[str, Any]] = {
    "mean": {"kind": "mean_mil"},
    "mean_mil": {"kind": "mean_mil"},
    "abmil": {"kind": "abmil", "gated": False},
    "gated_abmil": {"kind": "abmil", "gated": True},
    "pma": {"kind": "pma_mil"},
    "pma_mil": {"kind": "pma_mil"},
}
MIL_KINDS = ("mean_mil", "abmil", "pma_mil")


class MilTask(MultiLabelTask):
    """BCE with ``pos_weight`` per label, averaged over the known (non-NaN) targets of the batch;
    validated on ``val/loss`` and ``val/mean_auroc`` (each label over the bags where it is known)."""

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        logits = self.model(batch["feats"], batch["mask"]).float()
        targets = batch["targets"].float()
        known = ~torch.isnan(targets)
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.nan_to_num(targets), pos_weight=self.pos_weight, reduction="none")
        loss = (loss * known).sum() / known.sum().clamp(min=1)
        keep = None if stage == "train" else {"scores": logits.sigmoid().detach().cpu(), "targets": targets.cpu()}
        return Step(loss, keep=keep)

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        scores = torch.cat([v["scores"] for v in kept]).numpy()
        targets = torch.cat([v["targets"] for v in kept]).numpy()
        return {"mean_auroc": mean_known_auroc(targets, scores)}


def mean_known_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean over labels (columns) of the AUROC on the rows where the label is known (NaN: none defined)."""
    values = []
    for c in range(targets.shape[1]):
        known = ~np.isnan(targets[:, c])
        values.append(score_metrics(targets[known, c], scores[known, c])["auroc"])
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def known_positive_weights(targets: np.ndarray) -> np.ndarray:
    """BCE ``pos_weight`` per label: negatives / positives among the known targets (1 where a class is absent)."""
    known = ~np.isnan(targets)
    pos = np.nansum(targets, axis=0)
    neg = known.sum(0) - pos
    return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0).astype(np.float32)


def head_config(head: str, options: dict[str, Any] | None, in_dim: int, n_classes: int) -> dict[str, Any]:
    """The component config of a MIL head: a shortcut (:data:`HEADS`), a registry name or a JSON file,
    updated with ``options`` (constructor arguments such as ``hidden``, ``dropout``) and sized to the
    data (``in_dim``, ``n_classes``, which the options may not set)."""
    from radlens.models.components import check_config
    from radlens.models.registry import architecture, get_config

    base = dict(HEADS[head]) if head in HEADS else architecture(get_config(head))
    options = dict(options or {})
    fixed = sorted({"kind", "in_dim", "n_classes"} & set(options))
    if fixed:
        raise ConfigError(f"head_options may not set {', '.join(fixed)}: the head's kind comes from --head and its "
                          "sizes from the data")
    if base.get("kind") not in MIL_KINDS:
        raise ConfigError(f"head {head!r} is a {base.get('kind')!r} model, not a MIL head ({', '.join(MIL_KINDS)}); "
                          f"shortcuts: {', '.join(HEADS)}")
    config = {**base, **options, "in_dim": int(in_dim), "n_classes": int(n_classes)}
    check_config(config)
    return config


def fresh_head(config: dict[str, Any], seed: int) -> nn.Module:
    """A newly initialised head from ``config``, its weights drawn from ``seed`` alone (a fold's own seed)."""
    from radlens.models.components import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(config)


def predict_bags(model: nn.Module, dataset: Any, batch_size: int = 8,
                 device: torch.device | str = "cpu") -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Probabilities ``(n_bags, C)`` of every bag of ``dataset`` (a BagDataset, evaluation items) and,
    per bag, the instances it was given: ``row`` (in the file), ``slice_index`` and attention ``weight``."""
    from torch.utils.data import DataLoader

    from radlens.data.bags import collate_bags

    model = model.to(device).eval()
    scores, attention = [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_bags):
            mask = batch["mask"].to(device)
            logits, weights = model.logits_and_attention(batch["feats"].to(device), mask)
            scores.append(logits.float().sigmoid().cpu().numpy())
            weights, real = weights.float().cpu().numpy(), batch["mask"].numpy()
            for b, index in enumerate(batch["index"].tolist()):
                attention.append({"row": dataset.instances(index, None), "slice_index": batch["slice_index"][b].numpy()[real[b]],
                                  "weight": weights[b][real[b]]})
    return np.concatenate(scores), attention
