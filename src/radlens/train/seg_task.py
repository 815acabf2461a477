"""The segmentation task: a segmenter on image + label-map batches, Dice + cross-entropy, judged by validation Dice.

The loss is MONAI's ``DiceCELoss`` as nnU-Net trains: softmax over the ``K`` label channels,
cross-entropy over all of them plus a batch Dice (the Dice of the whole batch at once, which stays
defined for slices without a structure) over the foreground channels. Masks hold the prepared
dataset's label ids; the task maps them to channel indices (the segmenter's ``label_ids``).

Validation logs ``val/dice`` (the default monitor, larger is better): the Dice of each foreground label
over the whole validation split at once (voxel counts summed over every item), averaged over the labels
present in the validation truth; ``val/dice_<label name>`` per label; and ``val/loss``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from radlens.errors import InputError
from radlens.metrics.segmentation import dice_from_counts
from radlens.train.config import OptimConfig
from radlens.train.task import Step, TaskModule


def metric_name(label: str) -> str:
    """A label name as a metric-name suffix (letters, digits and ``_``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "label"


class SegTask(TaskModule):
    """Trains a segmenter (:mod:`radlens.models.segmenter`) on :class:`radlens.data.modules.ImageMaskDataModule` batches.

    ``labels`` is the dataset's label table (id -> name) restricted to the segmenter's ``label_ids``.
    """

    metrics = ("val/dice", "val/loss")
    larger_is_better = frozenset({"val/dice"})

    def __init__(self, model: torch.nn.Module, labels: Mapping[int, str], optim: OptimConfig | None = None,
                 lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> None:
        from monai.losses import DiceCELoss

        super().__init__(model, optim)
        ids = list(model.label_ids)  # type: ignore[attr-defined]
        self.names = [str(labels[i]) for i in ids]
        lookup = torch.full((max(ids) + 1,), -1, dtype=torch.int64)
        lookup[torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("channel_of", lookup, persistent=False)
        self.loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                  lambda_dice=lambda_dice, lambda_ce=lambda_ce)

    def channels(self, mask: torch.Tensor) -> torch.Tensor:
        """Label ids ``(B, 1, *spatial)`` -> channel indices; an id the segmenter lacks is an error."""
        if int(mask.min()) < 0 or int(mask.max()) >= len(self.channel_of):
            raise InputError(None, f"mask ids {int(mask.min())}..{int(mask.max())} outside the segmenter's label ids")
        target = self.channel_of[mask]
        if bool((target < 0).any()):
            missing = sorted(set(torch.unique(mask[target < 0]).tolist()))
            raise InputError(None, f"mask ids {missing} are not among the segmenter's label ids")
        return target

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        logits = self.model(batch["image"])
        target = self.channels(batch["mask"])
        loss = self.loss_fn(logits, target)
        if stage == "train":
            return Step(loss)
        pred, truth = logits.argmax(dim=1), target[:, 0]
        counts = torch.stack([torch.stack([((pred == k) & (truth == k)).sum(), (pred == k).sum(), (truth == k).sum()])
                              for k in range(1, logits.shape[1])])
        return Step(loss, keep={"counts": counts.cpu()})

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        counts = torch.stack([k["counts"] for k in kept]).sum(dim=0).numpy()
        return dice_summary(counts, self.names[1:])


def dice_summary(counts: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``dice`` (mean over the labels present in the truth) and ``dice_<name>`` per label from summed
    :func:`radlens.metrics.segmentation.overlap_counts` rows."""
    dice = dice_from_counts(counts)
    out = {f"dice_{metric_name(n)}": float(d) for n, d in zip(names, dice)}
    present = counts[:, 2] > 0
    out["dice"] = float(dice[present].mean()) if present.any() else float("nan")
    return out
