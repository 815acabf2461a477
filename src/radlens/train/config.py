"""Typed configs shared by every training task: each dataclass is one option group of ``radlens train ...``.

jsonargparse turns every field into a dotted option (``--optim.lr 3e-4``) and a YAML section,
and rejects unknown keys and wrong types before any work starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from radlens.errors import ConfigError


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay, stepped every optimizer step.

    Weight decay is not applied to norms, biases and the temperature (``logit_scale``).
    """

    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    """Lightning Trainer settings: hardware, precision, loop length, checkpoints, validation.

    ``precision="auto"`` picks ``bf16-mixed`` on a GPU and ``32-true`` on the CPU.
    ``val_every_n_steps`` and ``checkpoint_every_n_steps`` count training batches.
    ``monitor`` is the validation metric the best ``keep_best`` checkpoints are chosen by (default:
    the task's own, e.g. ``val/i2t_R@1`` for CLIP, ``val/loss`` for the finding tasks).
    ``max_time`` (``DD:HH:MM:SS``) stops training early, e.g. to fit a time budget.
    """

    max_steps: int = 1000
    max_time: str | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    precision: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    val_every_n_steps: int = 200
    checkpoint_every_n_steps: int = 200
    keep_best: int = 1
    monitor: str | None = None
    log_every_n_steps: int = 10
    progress_bar: bool = True


@dataclass
class LossConfig:
    """Contrastive loss: ``clip``, ``multi_positive`` (protocol labels), ``soft`` (TE/TR/TI kernel)
    or ``findings`` (overlap of the finding labels, e.g. CT-RATE's 18); ``alpha`` is the target mass
    the soft and findings modes spread beyond the item's own pair."""

    mode: Literal["clip", "multi_positive", "soft", "findings"] = "clip"
    alpha: float = 0.3
    sigma: float = 0.1
    time_unit: float = 1e-3


def validate(optim: OptimConfig, trainer: TrainerConfig, checks: list[tuple[bool, str]] | None = None) -> None:
    """Value checks jsonargparse's type checks cannot express, plus a task's own ``checks``
    (``(ok, message)`` pairs); ``ConfigError`` before any work."""
    common: list[tuple[bool, str]] = [
        (optim.lr > 0, f"optim.lr must be > 0, got {optim.lr}"),
        (optim.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {optim.warmup_steps}"),
        (0.0 <= optim.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1], got {optim.min_lr_ratio}"),
        (trainer.max_steps > 0, f"trainer.max_steps must be > 0, got {trainer.max_steps}"),
        (trainer.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches must be >= 1"),
        (trainer.val_every_n_steps >= 1, "trainer.val_every_n_steps must be >= 1"),
        (trainer.checkpoint_every_n_steps >= 1, "trainer.checkpoint_every_n_steps must be >= 1"),
        (trainer.keep_best >= 0, "trainer.keep_best must be >= 0"),
        (trainer.strategy != "fsdp" or runs_on_gpu(trainer.accelerator),
         "trainer.strategy fsdp shards the model over GPUs and needs accelerator gpu/cuda with a GPU present; "
         "use ddp (or auto) on the CPU"),
    ]
    for ok, message in [*(checks or []), *common]:
        if not ok:
            raise ConfigError(message)


def runs_on_gpu(accelerator: str) -> bool:
    """Whether a Trainer with this ``accelerator`` setting will run on a GPU here."""
    import torch

    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (tuples become lists) for YAML and hparams."""
    out = asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
