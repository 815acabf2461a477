"""The LightningModule of image-text contrastive training (CLIP, multi-positive, soft targets)."""

from __future__ import annotations

import math
import random
from functools import partial
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from radlens.metrics.retrieval import clip_retrieval, text_keys_of
from radlens.losses.contrastive import ContrastiveLoss
from radlens.train.config import LossConfig, OptimConfig

_NO_DECAY_NAMES = ("bias", "norm", "logit_scale", "temperature")


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only (not norms, biases, the temperature)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or any(key in name.lower() for key in _NO_DECAY_NAMES)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ClipModule(pl.LightningModule):
    """Trains a :class:`radlens.models.clip.CLIPModel` with :class:`ContrastiveLoss`.

    Validation embeds the whole validation split and logs retrieval (``val/i2t_R@1`` ...,
    ``val/i2t_label_R@1`` ... when the items have protocol labels). Global RNG states travel in
    the checkpoints so that a resumed run draws the same dropout masks as an uninterrupted one.
    """

    def __init__(self, model: torch.nn.Module, loss: LossConfig | None = None, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss_cfg, self.optim_cfg = loss or LossConfig(), optim or OptimConfig()
        kwargs = {"alpha": self.loss_cfg.alpha, "sigma": self.loss_cfg.sigma, "time_unit": self.loss_cfg.time_unit}
        self.loss_fn = ContrastiveLoss(self.loss_cfg.mode, **kwargs)
        # Validation runs the whole split on every rank: no gathering (it would duplicate items).
        self.val_loss_fn = ContrastiveLoss(self.loss_cfg.mode, gather=False, **kwargs)
        self._val: list[dict[str, Any]] = []
        self._rng_to_restore: dict[str, Any] | None = None

    def _loss(self, batch: dict[str, Any], loss_fn: ContrastiveLoss) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        img, txt, scale = self.model(batch["images"], batch["input_ids"], batch["attention_mask"])
        loss = loss_fn(img, txt, scale, labels=batch["labels"], metadata=batch["times"], findings=batch["findings"])
        return loss, img, txt, scale

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, _, scale = self._loss(batch, self.loss_fn)
        n = len(batch["images"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        self.log("train/logit_scale", scale.detach(), on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, img, txt, _ = self._loss(batch, self.val_loss_fn)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(batch["images"]))
        self._val.append(
            {"img": img.float().cpu(), "txt": txt.float().cpu(), "labels": batch["labels"].cpu(), "texts": batch["texts"]}
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        img = torch.cat([v["img"] for v in self._val]).numpy()
        txt = torch.cat([v["txt"] for v in self._val]).numpy()
        labels = torch.cat([v["labels"] for v in self._val]).numpy()
        texts = [t for v in self._val for t in v["texts"]]
        metrics = clip_retrieval(img, txt, text_keys=text_keys_of(texts), labels=labels)
        logged = {f"val/{k}": float(v) for k, v in metrics.items() if "R@" in k or "rank" in k}
        self.log_dict(logged, prog_bar=False)
        self._val = []

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_cfg
        optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
        )
        total = int(self.trainer.estimated_stepping_batches)
        schedule = partial(warmup_cosine, warmup=cfg.warmup_steps, total=total, min_ratio=cfg.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Tensors, ints and tuples only, so the checkpoint loads with ``weights_only=True``.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
            **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied when training starts: restoring happens before Lightning's own setup work.
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        states, self._rng_to_restore = self._rng_to_restore, None
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(states["python"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
