"""The CLIP task: image-text contrastive training (CLIP, multi-positive, soft or findings targets)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from radlens.losses.contrastive import ContrastiveLoss
from radlens.metrics.retrieval import clip_retrieval, text_keys_of
from radlens.train.config import LossConfig, OptimConfig
from radlens.train.task import Step, TaskModule

if TYPE_CHECKING:
    from radlens.train.clip_zeroshot import ZeroShotValidation

_DIRECTIONS = ("i2t", "t2i", "i2t_label", "t2i_label")


class ClipTask(TaskModule):
    """Trains a :class:`radlens.models.clip.CLIPModel` with :class:`ContrastiveLoss`.

    Validation embeds the whole validation split and logs retrieval (``val/i2t_R@1`` ...,
    ``val/i2t_label_R@1`` ... when the items have protocol labels); ``val/i2t_R@1`` is the default
    monitor. With ``zeroshot`` (:mod:`radlens.train.clip_zeroshot`) it also logs the zero-shot metric of
    the validation split (``val/zeroshot_auroc`` or ``val/zeroshot_bacc``). The training loss gathers
    negatives across devices; validation runs the whole split on every rank, so it does not gather
    (that would duplicate items).
    """

    metrics = ("val/i2t_R@1", "val/loss", *(f"val/{d}_{m}" for d in _DIRECTIONS
                                            for m in ("R@1", "R@5", "R@10", "mean_rank", "median_rank")
                                            if (d, m) != ("i2t", "R@1")), "val/zeroshot_auroc", "val/zeroshot_bacc")
    larger_is_better = frozenset(m for m in metrics if "R@" in m or "zeroshot" in m)

    def __init__(self, model: torch.nn.Module, loss: LossConfig | None = None, optim: OptimConfig | None = None,
                 zeroshot: ZeroShotValidation | None = None) -> None:
        super().__init__(model, optim)
        self.zeroshot = zeroshot
        self.loss_cfg = loss or LossConfig()
        kwargs = {"alpha": self.loss_cfg.alpha, "sigma": self.loss_cfg.sigma, "time_unit": self.loss_cfg.time_unit}
        self.loss_fn = ContrastiveLoss(self.loss_cfg.mode, **kwargs)
        self.val_loss_fn = ContrastiveLoss(self.loss_cfg.mode, gather=False, **kwargs)

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        img, txt, scale = self.model(batch["images"], batch["input_ids"], batch["attention_mask"])
        loss_fn = self.loss_fn if stage == "train" else self.val_loss_fn
        loss = loss_fn(img, txt, scale, labels=batch["labels"], metadata=batch["times"], findings=batch["findings"])
        if stage == "train":
            return Step(loss, {"logit_scale": scale})
        keep = {"img": img.float().cpu(), "txt": txt.float().cpu(), "labels": batch["labels"].cpu(), "texts": batch["texts"],
                "index": batch["index"]}
        return Step(loss, keep=keep)

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        img = torch.cat([v["img"] for v in kept]).numpy()
        txt = torch.cat([v["txt"] for v in kept]).numpy()
        labels = torch.cat([v["labels"] for v in kept]).numpy()
        texts = [t for v in kept for t in v["texts"]]
        metrics = clip_retrieval(img, txt, text_keys=text_keys_of(texts), labels=labels)
        logged = {k: float(v) for k, v in metrics.items() if "R@" in k or "rank" in k}
        if self.zeroshot is not None:
            index = np.concatenate([np.asarray(v["index"]) for v in kept])
            logged.update(self.zeroshot(self.model, img, index))
        return logged
