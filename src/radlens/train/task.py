"""The LightningModule base every training task shares.

A task says what a batch's loss is (:meth:`TaskModule.step`) and which validation metrics it
computes (:meth:`TaskModule.validation_metrics`, named in ``metrics``, the first of which is the
metric best checkpoints are chosen by unless the user names another). The base owns the rest:
AdamW with parameter groups (no weight decay on norms, biases, the temperature), linear warm-up
+ cosine decay stepped per optimiser step, logging, and the global RNG states in checkpoints, so
that a resumed run draws the same dropout masks as an uninterrupted one. Gradient accumulation
and clipping are Trainer settings (:class:`radlens.train.config.TrainerConfig`).

Checkpoints leave out the parts of the model a task declares fixed (:meth:`TaskModule.fixed_parts`:
pretrained or bundle-loaded weights that never change and are rebuilt the same when a run resumes,
e.g. a frozen text tower or an LDM's VAE), keeping only their SHA-256: a run that keeps a checkpoint
every few hundred steps does not write a frozen 100 MB text tower each time.
"""

from __future__ import annotations

import abc
import math
import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch

from radlens.errors import ConfigError
from radlens.models.components import weights_digest
from radlens.train.config import OptimConfig

_NO_DECAY_NAMES = ("bias", "norm", "logit_scale", "temperature")
_FIXED_KEY = "frozen_sha256"


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices only (not norms, biases, the temperature);
    frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or any(key in name.lower() for key in _NO_DECAY_NAMES)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Step:
    """What a task computes for one batch: the loss, extra scalars to log (``train/<name>`` or
    ``val/<name>``), and what validation keeps for :meth:`TaskModule.validation_metrics`."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    keep: dict[str, Any] | None = None


class TaskModule(pl.LightningModule, abc.ABC):
    """Base of every radlens training task; ``self.model`` is the component being trained.

    Subclasses implement :meth:`step` and, when they validate on more than the loss,
    :meth:`validation_metrics`; ``metrics`` lists every validation metric they log, the first being
    the default monitor, and ``larger_is_better`` names those to maximise.
    """

    metrics: ClassVar[tuple[str, ...]] = ("val/loss",)
    larger_is_better: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.model = model
        self.optim_cfg = optim or OptimConfig()
        self._val: list[dict[str, Any]] = []
        self._rng_to_restore: dict[str, Any] | None = None
        self._fixed_digests: dict[str, str] | None = None

    def fixed_parts(self) -> list[str]:
        """Parts of ``self.model`` (module paths such as ``vae`` or ``text.model.embeddings``) whose weights
        stay fixed for the whole run and are rebuilt the same when it resumes: what the model's own
        ``fixed_parts()`` names (a pretrained frozen text tower, a frozen encoder from a bundle), if any."""
        parts = getattr(self.model, "fixed_parts", None)
        return list(parts()) if callable(parts) else []

    def _fixed_prefixes(self) -> tuple[str, ...]:
        return tuple(f"model.{name}." for name in self.fixed_parts())

    def fixed_digests(self) -> dict[str, str]:
        """SHA-256 of each fixed part's weights (computed once: they do not change)."""
        if self._fixed_digests is None:
            self._fixed_digests = {name: weights_digest(self.model.get_submodule(name)) for name in self.fixed_parts()}
        return self._fixed_digests

    @classmethod
    def monitor_mode(cls, metric: str) -> str:
        """``max`` for metrics where larger is better, ``min`` for losses and ranks."""
        return "max" if metric in cls.larger_is_better else "min"

    @abc.abstractmethod
    def step(self, batch: Any, stage: str) -> Step:
        """The loss of ``batch`` in ``stage`` (``train`` or ``val``)."""

    def batch_size(self, batch: Any) -> int:
        return len(batch["index"])

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        """Metrics over the whole validation split from what :meth:`step` kept (names without ``val/``)."""
        return {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out, n = self.step(batch, "train"), self.batch_size(batch)
        self.log("train/loss", out.loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        for name, value in out.logs.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=False, batch_size=n)
        return out.loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = self.step(batch, "val")
        self.log("val/loss", out.loss, on_epoch=True, batch_size=self.batch_size(batch))
        if out.keep is not None:
            self._val.append(out.keep)

    def on_validation_epoch_end(self) -> None:
        if self._val:
            self.log_dict({f"val/{k}": float(v) for k, v in self.validation_metrics(self._val).items()})
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
        prefixes = self._fixed_prefixes()
        if prefixes:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefixes)}
            checkpoint[_FIXED_KEY] = self.fixed_digests()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied when training starts: restoring happens before Lightning's own setup work.
        self._rng_to_restore = checkpoint.get("rng_states")
        saved = checkpoint.get(_FIXED_KEY) or {}
        ours = self.fixed_digests() if saved else {}
        changed = sorted(name for name in saved if ours.get(name) != saved[name])
        if changed:
            raise ConfigError(f"the frozen {', '.join(changed)} of this run differ from the ones it was started with: "
                              "resume with the same bundles and pretrained towers as the interrupted run")

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load weights, taking the fixed parts a checkpoint leaves out from this task's own."""
        prefixes = self._fixed_prefixes()
        if not prefixes:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        full = {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}
        full.update(state_dict)
        return super().load_state_dict(full, strict=strict, assign=assign)

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
