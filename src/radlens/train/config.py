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

    Attributes:
        lr: peak learning rate, reached after the warm-up.
        weight_decay: AdamW weight decay of the weight matrices (not norms, biases, temperature).
        betas: AdamW's moving-average coefficients of the gradient and its square.
        eps: AdamW's denominator term for numerical stability.
        warmup_steps: optimizer steps of linear warm-up from 0 to ``lr``.
        min_lr_ratio: learning rate at the end of the cosine decay, as a fraction of ``lr``.
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

    Attributes:
        max_steps: optimizer steps to train in all (a resumed run continues up to this step).
        max_time: wall-clock budget of this invocation as DD:HH:MM:SS (e.g. 00:00:30:00 for 30 minutes);
            training stops when it is used up, and ``--resume latest`` gets the budget afresh.
        accelerator: auto (a GPU when there is one), cpu, gpu/cuda or mps.
        devices: devices per node: a number, a list of ids, or auto.
        num_nodes: machines taking part in a multi-node run.
        strategy: auto, ddp (one process per device, gradients all-reduced) or fsdp (shards the model
            over GPUs; refused on the CPU).
        precision: auto (bf16-mixed on a GPU, 32-true on the CPU) or a Lightning precision such as
            32-true, bf16-mixed, 16-mixed.
        accumulate_grad_batches: batches whose gradients are summed per optimizer step.
        gradient_clip_val: clip the gradient norm to this value (none: no clipping).
        val_every_n_steps: validate every this many training batches.
        checkpoint_every_n_steps: keep a checkpoint step-NNNNNNN.ckpt every this many training batches.
        checkpoint_minutes: also refresh checkpoints/last.ckpt every this many minutes of training
            (0: only at the step checkpoints); last.ckpt is always written on Ctrl-C or SIGTERM.
        keep_best: keep this many best checkpoints by ``monitor`` (0: none; best/ is then the last weights).
        monitor: validation metric the best checkpoints are chosen by (default: the task's own, listed
            first). CLIP: val/i2t_R@1, val/loss, val/{i2t,t2i}_{R@1,R@5,R@10,mean_rank,median_rank};
            ClassFine, VocabFine, labeller, MIL: val/loss, val/mean_auroc; MoCo/LeCL: val/loss,
            val/knn_lesion_bacc, val/alignment, val/uniformity. A name the task does not log is refused.
        log_every_n_steps: write training losses to the CSV/TensorBoard logs every this many steps.
        progress_bar: show the progress bar (training steps and validation).
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
    checkpoint_minutes: float = 10.0
    keep_best: int = 1
    monitor: str | None = None
    log_every_n_steps: int = 10
    progress_bar: bool = True


@dataclass
class LossConfig:
    """Contrastive loss of a CLIP run.

    Attributes:
        mode: clip (symmetric InfoNCE), multi_positive (every in-batch pair with the same protocol label
            is a positive), soft (targets mixed with a kernel on TE/TR/TI distance) or findings (targets
            mixed with the Jaccard overlap of the scans' finding labels, e.g. CT-RATE's 18).
        alpha: soft and findings modes: targets are (1 - alpha) x the item's own pair + alpha x the
            normalised kernel over the batch (0: plain CLIP targets; 1: the kernel alone).
        sigma: soft mode: width of the Gaussian kernel exp(-d^2 / 2 sigma^2), where d is the distance
            between items' log(1 + time / time_unit) vectors of (TE, TR, TI); 0.1 makes TE 10 vs 11 ms close.
        time_unit: soft mode: the time scale in seconds inside the log distance (1e-3: milliseconds).
    """

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
        (trainer.checkpoint_minutes >= 0, "trainer.checkpoint_minutes must be >= 0 (0: off)"),
        (trainer.max_time is None or _valid_duration(trainer.max_time),
         f"trainer.max_time must be DD:HH:MM:SS (e.g. 00:00:30:00), got {trainer.max_time!r}"),
        (trainer.keep_best >= 0, "trainer.keep_best must be >= 0"),
        (trainer.strategy != "fsdp" or runs_on_gpu(trainer.accelerator),
         "trainer.strategy fsdp shards the model over GPUs and needs accelerator gpu/cuda with a GPU present; "
         "use ddp (or auto) on the CPU"),
    ]
    for ok, message in [*(checks or []), *common]:
        if not ok:
            raise ConfigError(message)


def _valid_duration(text: str) -> bool:
    """Whether ``text`` is Lightning's DD:HH:MM:SS duration."""
    parts = str(text).split(":")
    return len(parts) == 4 and all(p.strip().isdigit() for p in parts)


def runs_on_gpu(accelerator: str) -> bool:
    """Whether a Trainer with this ``accelerator`` setting will run on a GPU here."""
    import torch

    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (tuples become lists) for YAML and hparams."""
    out = asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
