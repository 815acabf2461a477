"""The MoCo v3 / LeCL task: two views of a slice, base vs momentum encoder, symmetrised InfoNCE.

Per optimiser step the momentum encoder first moves toward the base encoder
(``m * momentum + (1 - m) * base``, once per optimiser step also with gradient accumulation),
then the loss of :class:`radlens.losses.moco.MocoLoss` is computed on the batch. ``m`` is
``moco.momentum`` (0.99), or with ``moco.momentum_cosine`` MoCo v3's half-cosine ramp from it to 1
over the run: ``m_t = 1 - (1 - m) * (1 + cos(pi * t / T)) / 2``.

The learning rate is MoCo v3's linear scaling rule: AdamW runs at ``optim.lr * B / 256`` with
``B`` the global batch of one optimiser step (per-device batch x devices x accumulated batches),
with the base's linear warm-up and cosine decay. On more than one GPU the batch norms become
``SyncBatchNorm`` (MoCo v3's SyncBN), so every view's statistics cover the global batch (DDP on
CPUs keeps per-process statistics: PyTorch's SyncBatchNorm needs an accelerator).

Validation (every rank runs the whole split, no gathering) logs ``val/loss`` (the default monitor:
the training loss on fixed validation pairs, which tracks training when the pairs are augmented
like training's, ``data.val_augment``), ``val/alignment`` and ``val/uniformity`` (Wang & Isola
2020, on the L2-normalised encoder features) and, when validation slices of both lesion classes
exist, ``val/knn_lesion_bacc``: the balanced accuracy of a similarity-weighted k-nearest-neighbour
vote (k = ``moco.knn_k``) predicting each slice's lesion flag from the slices of *other*
patients. Choose it with ``--trainer.monitor val/knn_lesion_bacc`` when lesion labels exist.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radlens.losses.moco import MocoLoss
from radlens.train.config import OptimConfig
from radlens.train.moco_config import MocoConfig, MocoLossConfig
from radlens.train.task import Step, TaskModule

_MAX_METRIC_ITEMS = 4096  # validation metrics use at most this many slices (evenly spaced)


def momentum_at(step: int, total: int, base: float, cosine: bool) -> float:
    """The key encoder's momentum at optimiser step ``step`` of ``total``: ``base``, or the half-cosine ramp to 1."""
    if not cosine:
        return base
    progress = min(1.0, step / max(1, total))
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scaled_lr(lr: float, global_batch: int) -> float:
    """MoCo v3's linear scaling rule: ``lr * global_batch / 256``."""
    return lr * global_batch / 256


class MocoTask(TaskModule):
    """Trains a :class:`radlens.models.moco.MoCo` on batches of :class:`radlens.data.modules.ImageViewsDataModule`.

    ``batch_size`` is the per-device training batch (for the lr scaling rule).
    """

    metrics = ("val/loss", "val/knn_lesion_bacc", "val/alignment", "val/uniformity")
    larger_is_better = frozenset({"val/knn_lesion_bacc"})

    def __init__(self, model: torch.nn.Module, batch_size: int, loss: MocoLossConfig | None = None,
                 optim: OptimConfig | None = None, moco: MocoConfig | None = None) -> None:
        super().__init__(model, optim)
        self.loss_cfg, self.moco_cfg, self.per_device_batch = loss or MocoLossConfig(), moco or MocoConfig(), batch_size
        self.loss_fn = MocoLoss(self.loss_cfg.temperature, self.loss_cfg.lesion_weight)
        self.val_loss_fn = MocoLoss(self.loss_cfg.temperature, self.loss_cfg.lesion_weight, gather=False)
        self._momentum_done_at = -1

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        # PyTorch's SyncBatchNorm runs on accelerators only; DDP on CPUs keeps per-process batch norms.
        if trainer.world_size > 1 and trainer.strategy.root_device.type != "cpu":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)

    def configure_optimizers(self) -> dict[str, Any]:
        trainer = self.trainer
        global_batch = self.per_device_batch * trainer.world_size * trainer.accumulate_grad_batches
        base = self.optim_cfg
        self.optim_cfg = replace(base, lr=scaled_lr(base.lr, global_batch))
        try:
            return super().configure_optimizers()
        finally:
            self.optim_cfg = base

    def momentum(self) -> float:
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return momentum_at(int(self.global_step), total, self.moco_cfg.momentum, self.moco_cfg.momentum_cosine)

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        logs: dict[str, torch.Tensor] = {}
        if stage == "train" and self._momentum_done_at != int(self.global_step):
            m = self.momentum()
            self.model.update_momentum(m)  # once per optimiser step (not per accumulated batch)
            self._momentum_done_at = int(self.global_step)
            logs["momentum"] = torch.tensor(m)
        out = self.model(batch["view1"], batch["view2"])
        loss_fn = self.loss_fn if stage == "train" else self.val_loss_fn
        loss = loss_fn(out["q1"], out["q2"], out["k1"], out["k2"], batch["lesion"])
        if stage == "train":
            return Step(loss, logs)
        keep = {"h1": out["h1"].detach().float().cpu(), "h2": out["h2"].detach().float().cpu(),
                "lesion": batch["lesion"].cpu(), "patient_id": list(batch["patient_id"])}
        return Step(loss, keep=keep)

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        h1 = F.normalize(torch.cat([v["h1"] for v in kept]), dim=1)
        h2 = F.normalize(torch.cat([v["h2"] for v in kept]), dim=1)
        lesion = torch.cat([v["lesion"] for v in kept]).numpy()
        patients = np.asarray([p for v in kept for p in v["patient_id"]])
        pick = np.unique(np.linspace(0, len(h1) - 1, min(len(h1), _MAX_METRIC_ITEMS)).round().astype(int))
        h1, h2, lesion, patients = h1[pick], h2[pick], lesion[pick], patients[pick]
        out = {"alignment": alignment(h1, h2), "uniformity": uniformity(h1)}
        knn = knn_balanced_accuracy(F.normalize(h1 + h2, dim=1), lesion, patients, self.moco_cfg.knn_k)
        if knn is not None:
            out["knn_lesion_bacc"] = knn
        return out


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Mean squared distance between the normalised features of the two views of each item (lower: more aligned)."""
    return float((z1 - z2).pow(2).sum(dim=1).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` of normalised features (lower: more uniform on the sphere)."""
    if len(z) < 2:
        return float("nan")
    d2 = torch.cdist(z, z).pow(2)
    off = ~torch.eye(len(z), dtype=torch.bool)
    return float(torch.logsumexp(-t * d2[off], dim=0) - math.log(int(off.sum())))


def knn_balanced_accuracy(z: torch.Tensor, labels: np.ndarray, groups: np.ndarray, k: int = 20,
                          temperature: float = 0.07) -> float | None:
    """Balanced accuracy of a kNN vote predicting 0/1 ``labels`` (others ignored) from normalised
    features ``z``, neighbours only from other ``groups`` (patients), votes weighted by
    ``exp(cosine / temperature)``; None unless both classes and two groups are present."""
    known = np.flatnonzero((labels == 0) | (labels == 1))
    if len(known) < 2 or len(set(labels[known].tolist())) < 2 or len(set(groups[known].tolist())) < 2:
        return None
    z, y, g = z[known], torch.as_tensor(labels[known]), groups[known]
    sim = z @ z.T
    same = torch.as_tensor(g[:, None] == g[None, :])
    sim = sim.masked_fill(same, -math.inf)
    k = min(k, int((~same).sum(dim=1).min()))
    top, idx = sim.topk(k, dim=1)
    weights = torch.exp(top / temperature)
    votes = torch.zeros(len(z), 2).scatter_add_(1, y[idx], weights)
    pred = votes.argmax(dim=1)
    recalls = [float((pred[y == c] == c).float().mean()) for c in (0, 1)]
    return float(np.mean(recalls))
