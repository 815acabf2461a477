"""The Lightning callbacks every radlens run adds: time budget per invocation, ``last.ckpt`` on a
wall-clock cadence and on interruption, and one progress bar in optimiser steps.

- :class:`InvocationTimer` — Lightning's ``Timer`` stores the training time spent so far in the
  checkpoint and, on resume, counts it against ``max_time``: a run stopped by its time budget and
  resumed with ``--resume latest`` then stops at once and trains nothing. radlens treats
  ``--trainer.max_time`` as the budget of each invocation instead, so resuming gives the run that
  much more time.
- :class:`SaveLast` — ``RUN/checkpoints/last.ckpt`` every ``checkpoint_minutes`` of training and when
  training is interrupted (Ctrl-C, SIGTERM: Lightning's ``on_exception`` hook), so an interruption
  loses at most the step in progress, not everything since the last ``checkpoint_every_n_steps``.
- :class:`StepProgressBar` — training runs on ``max_steps`` with ``max_epochs=-1``, so Lightning's
  per-epoch bar shows "Epoch 23/-2"; this bar counts optimiser steps of the whole run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Timer, TQDMProgressBar


class InvocationTimer(Timer):
    """Lightning's ``Timer`` that does not carry the time of earlier invocations over from a checkpoint."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Ignore the elapsed time recorded in the checkpoint: the budget counts from this start."""

    @property
    def ran_out(self) -> bool:
        """Whether the budget is spent (training was stopped by it)."""
        remaining = self.time_remaining()
        return remaining is not None and remaining <= 0


def _interruption(exception: BaseException) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(exception, (KeyboardInterrupt, SIGTERMException))


class SaveLast(Callback):
    """Write ``path`` (the run's ``last.ckpt``) every ``minutes`` of training and when training is interrupted.

    ``minutes`` <= 0 turns the cadence off; the save on interruption is always on. The time check
    is broadcast from rank 0, so every rank of a DDP run saves together (saving is collective).
    """

    def __init__(self, path: Path, minutes: float) -> None:
        self.path, self.minutes = Path(path), float(minutes)
        self._last_save = time.monotonic()
        self._start_step = 0
        self.saved_on_interrupt = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        self._start_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.minutes <= 0:
            return
        due = trainer.strategy.broadcast(time.monotonic() - self._last_save >= self.minutes * 60)
        if due:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._last_save = time.monotonic()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not _interruption(exception) or trainer.global_step <= self._start_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_on_interrupt = True
        if trainer.is_global_zero:
            print(f"\ninterrupted at step {trainer.global_step}: saved {self.path}; "
                  "continue with --resume latest", flush=True)


class StepProgressBar(TQDMProgressBar):
    """One training bar over the whole run, counted in optimiser steps up to ``max_steps`` (resumed runs
    start where they stopped), with the logged losses; validation bars as Lightning's."""

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        bar = self.init_train_tqdm()
        bar.reset(total=trainer.max_steps)
        bar.initial = trainer.global_step
        bar.n = trainer.global_step
        bar.set_description("train")
        self.train_progress_bar = bar

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        """Keep the one bar across epochs (Lightning starts a bar per epoch)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing at an epoch's end: the bar spans the run."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The progress-bar metrics without Lightning's logger version number."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
