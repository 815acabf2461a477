"""One run function for every training task: run folder, Trainer, fit, checkpoints, bundles.

A run folder::

    RUN/
      config.yaml        the resolved command options (rerun with `--config RUN/config.yaml`)
      run.json           radlens version, seed, start time (rewritten at every (re)start)
      tokenizer/         a CLIP run's text tokenizer (reused on resume)
      checkpoints/       last.ckpt (also every few minutes and on Ctrl-C/SIGTERM), step-NNNNNNN.ckpt every
                         N steps, best-step-NNNNNNN.ckpt (top k)
      logs/csv/version_N/          metrics.csv (CSVLogger), one version per (re)start
      logs/tensorboard/version_N/  TensorBoard events
      best/, last/       model bundles written at the end (best by the monitored metric)
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from radlens.data.modules import RadlensDataModule
    from radlens.train.config import TrainerConfig
    from radlens.train.task import TaskModule

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> ``bf16-mixed`` when training runs on a GPU, ``32-true`` otherwise."""
    from radlens.train.config import runs_on_gpu

    if precision != "auto":
        return precision
    return "bf16-mixed" if runs_on_gpu(accelerator) else "32-true"


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: ``latest`` -> ``RUN/checkpoints/last.ckpt``, or a path.

    A run folder that already holds checkpoints is never overwritten silently.
    """
    last = run_dir / CHECKPOINTS / LAST
    if resume is None:
        if last.exists():
            raise ConfigError(f"{run_dir} already holds a run: pass --resume latest to continue it, or choose a new OUT folder")
        return None
    path = last if resume == "latest" else Path(resume)
    if not path.is_file():
        raise InputError(path, "no checkpoint to resume from")
    return path


def build_trainer(cfg: TrainerConfig, run_dir: Path, monitor: str, mode: str) -> pl.Trainer:
    """A Trainer with the run folder's loggers and checkpoints, stepping on ``max_steps``.

    Validation and checkpoints are scheduled in training batches across epoch boundaries
    (``check_val_every_n_epoch=None``). Samplers are radlens' own rank-aware batch samplers,
    so Lightning must not replace them (``use_distributed_sampler=False``). ``max_time`` is the
    budget of this invocation (:class:`radlens.train.callbacks.InvocationTimer`); ``last.ckpt`` is
    also written every ``checkpoint_minutes`` and on interruption (:class:`radlens.train.callbacks.SaveLast`);
    the progress bar counts steps (:class:`radlens.train.callbacks.StepProgressBar`).
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from radlens.train.callbacks import InvocationTimer, SaveLast, StepProgressBar

    ckpt_dir = run_dir / CHECKPOINTS
    callbacks: list[Any] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step-{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=cfg.checkpoint_every_n_steps,
            save_top_k=-1,
            save_last=True,
        ),
        LearningRateMonitor(logging_interval="step"),
        SaveLast(ckpt_dir / LAST, cfg.checkpoint_minutes),
    ]
    if cfg.max_time:
        callbacks.append(InvocationTimer(duration=cfg.max_time, interval="step"))
    if cfg.progress_bar:
        callbacks.append(StepProgressBar())
    if cfg.keep_best > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best-step-{step:07d}",
                auto_insert_metric_name=False,
                monitor=monitor,
                mode=mode,
                save_top_k=cfg.keep_best,
            )
        )
    loggers = [
        # One version folder per (re)start: Lightning's CSV writer would replace an existing metrics.csv.
        CSVLogger(save_dir=run_dir / "logs", name="csv"),
        TensorBoardLogger(save_dir=run_dir / "logs", name="tensorboard", default_hp_metric=False),
    ]
    return pl.Trainer(
        default_root_dir=run_dir,
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg.precision, cfg.accelerator),  # type: ignore[arg-type]
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        val_check_interval=cfg.val_every_n_steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=callbacks,
        logger=loggers,
    )


# Lightning's informational chatter (device lines, "Tip:" advertisements, "`Trainer.fit` stopped")
# goes to these loggers; warnings still pass.
_CHATTY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                   "lightning.pytorch.accelerators.cuda")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Training's console without Lightning's advertisements, device lines, deprecation warnings and
    "possible user mistake" hints (modules in eval mode: frozen towers are meant to be; few batches
    per epoch: radlens steps across epochs); real warnings still show. Restores everything on exit."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, PossibleUserWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
        # Resuming writes into the run's own checkpoints folder, which is meant to exist.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        for log in loggers:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)


def best_checkpoint(trainer: pl.Trainer) -> tuple[Path, float | None] | None:
    """Path and score of the best checkpoint by the monitored metric (None without validation or ``keep_best``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, ModelCheckpoint) and cb.monitor and cb.best_model_path:
            score = cb.best_model_score
            return Path(cb.best_model_path), None if score is None else float(score)
    return None


def write_run_config(run_dir: Path, config: dict[str, Any], seed: int, **extra: Any) -> None:
    """``config.yaml`` (exactly the command's options, so ``--config RUN/config.yaml`` reruns it) and
    ``run.json`` (radlens version, seed, start time, and ``extra`` facts such as the findings used)."""
    from radlens.common.atomic import write_json_atomic, write_yaml_atomic
    from radlens.common.runinfo import run_info

    write_yaml_atomic(run_dir / "config.yaml", config)
    write_json_atomic(run_dir / "run.json", {**run_info("train", config, seed), **extra})


def choose_monitor(task: type[TaskModule] | TaskModule, cfg: TrainerConfig) -> str:
    """The metric best checkpoints are chosen by: the user's, which the task must log, or the task's own."""
    if cfg.monitor is None:
        return task.metrics[0]
    if cfg.monitor not in task.metrics:
        raise ConfigError(f"trainer.monitor {cfg.monitor!r} is not logged by this task; use one of {', '.join(task.metrics)}")
    return cfg.monitor


@dataclass
class RunResult:
    """What :func:`run` leaves: the run folder, the final step, the checkpoint the ``best/`` bundle came from,
    and the monitored metric with the best score (None without validation)."""

    folder: Path
    global_step: int
    best: str
    is_global_zero: bool
    monitor: str | None = None
    score: float | None = None
    best_step: int | None = None


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was saved at (memory-mapped: the weights are not read)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def why_stopped(trainer: pl.Trainer, cfg: TrainerConfig, start_step: int) -> str:
    """Why training ended, in words, including when it trained nothing at all."""
    from radlens.train.callbacks import InvocationTimer

    step = int(trainer.global_step)
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, InvocationTimer)), None)  # type: ignore[attr-defined]
    if step >= cfg.max_steps and start_step >= cfg.max_steps:
        return (f"nothing to train: the checkpoint is already at step {start_step} of trainer.max_steps "
                f"{cfg.max_steps}; raise --trainer.max_steps to train longer")
    if step >= cfg.max_steps:
        return f"trainer.max_steps {cfg.max_steps} reached"
    if timer is not None and timer.ran_out:
        return f"trainer.max_time {cfg.max_time} used up; --resume latest continues with a fresh budget"
    return "stopped early"


def report(result: RunResult, stopped: str, start_step: int, seconds: float) -> None:
    """The run's two summary lines: steps trained and why training stopped; the best bundle and its score."""
    trained = result.global_step - start_step
    print(f"train: {trained} step(s) in {seconds:.0f} s, now at step {result.global_step}: {stopped}", flush=True)
    best, last = result.folder / "best", result.folder / "last"
    if result.monitor is not None and result.score is not None:
        print(f"best bundle: {best} ({result.monitor} = {result.score:.4g} at step {result.best_step}); "
              f"last bundle: {last}", flush=True)
    else:
        print(f"best bundle: {best} = the last weights (no validation score was logged); last bundle: {last}", flush=True)


def run(
    task: TaskModule,
    datamodule: RadlensDataModule,
    trainer: TrainerConfig,
    out: str | Path,
    resume: str | None,
    config: dict[str, Any],
    seed: int,
    facts: dict[str, Any] | None = None,
    best_extra: Callable[[TaskModule], dict[str, Any]] | None = None,
) -> RunResult:
    """Train ``task`` on ``datamodule`` into the run folder ``out``; the same for every task.

    Writes ``config.yaml`` (``config``: the command's options) and ``run.json`` (``facts`` added),
    fits with checkpoints every N steps and the best ``keep_best`` by the monitored metric, saves
    ``checkpoints/last.ckpt`` and, on rank 0, the bundles ``last/`` (final weights) and ``best/``
    (best checkpoint's weights, ``last`` when there is none). ``task.model`` holds the best weights
    afterwards; ``best_extra(task)`` (e.g. validation thresholds) goes into the ``best/`` bundle's
    ``extra``. ``resume``: ``latest`` or a checkpoint path, continuing exactly where it stopped
    (with a fresh ``max_time`` budget). Prints one line: steps trained, why training stopped
    (also when there was nothing left to train), the best bundle and its monitored score.
    """
    import torch

    from radlens.models.bundle import save_bundle

    run_dir = Path(out)
    ckpt_path = resolve_resume(run_dir, resume)
    monitor = choose_monitor(task, trainer)
    write_run_config(run_dir, config, seed, **(facts or {}))
    start_step = checkpoint_step(ckpt_path) if ckpt_path else 0
    started = time.monotonic()
    with quiet_lightning():
        pl_trainer = build_trainer(trainer, run_dir, monitor, task.monitor_mode(monitor))
        pl_trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        pl_trainer.save_checkpoint(run_dir / CHECKPOINTS / LAST, weights_only=False)
    result = RunResult(run_dir, int(pl_trainer.global_step), "last", pl_trainer.is_global_zero)
    stopped = why_stopped(pl_trainer, trainer, start_step)
    if not pl_trainer.is_global_zero:
        return result
    extra = {"run": str(run_dir.resolve()), "config": config, "global_step": result.global_step, **(facts or {})}
    dataset = getattr(datamodule, "prepared", None)
    if dataset is not None:
        extra["dataset"] = str(dataset.path.resolve())
    preprocessing = datamodule.preprocessing()
    save_bundle(task.model, run_dir / "last", preprocessing, {**extra, "checkpoint": "last"})
    best = best_checkpoint(pl_trainer)
    if best is not None and best[0].is_file():
        state = torch.load(best[0], map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
        result.best, result.monitor, result.score = best[0].name, monitor, best[1]
        result.best_step = int(state.get("global_step", 0))
        extra.update(monitor=monitor, score=best[1], best_step=result.best_step)
    extra.update(checkpoint=result.best, **(best_extra(task) if best_extra else {}))
    save_bundle(task.model, run_dir / "best", preprocessing, extra)
    report(result, stopped, start_step, time.monotonic() - started)
    return result
