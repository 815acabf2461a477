"""Loss trajectories of every trainer on tiny data, for the 'same seed, same losses' refactoring guard.

``tests/train/golden_losses.json`` holds the per-step training losses each trainer gave before the
trainers moved onto the shared task base and run function; :func:`trajectories` recomputes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

STEPS = 6


def train_losses(run: Path) -> list[float]:
    """Per-step ``train/loss`` of a run's CSV logs; a step redone after a restart counts once (its last value)."""
    files = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"), key=lambda f: int(f.parent.name.split("_")[1]))
    log = pd.concat([pd.read_csv(f) for f in files], ignore_index=True).dropna(subset=["train/loss"])
    return [float(v) for v in log.drop_duplicates("step", keep="last").sort_values("step")["train/loss"]]


def _trainer() -> object:
    from support.prepared_findings import quick_trainer

    return quick_trainer(max_steps=STEPS, val_every_n_steps=3, checkpoint_every_n_steps=2, log_every_n_steps=1)


class Killed(Exception):
    """Raised inside a run to stop it abruptly, as a killed process stops."""


@contextmanager
def interrupted_at(step: int) -> Iterator[None]:
    """Runs started inside die once ``step`` optimiser steps are done (``Killed`` is caught here); what
    they leave is what a killed run leaves: the checkpoints written so far."""
    from unittest import mock

    from lightning.pytorch.callbacks import Callback

    from radlens.train import run

    class Kill(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step >= step:
                raise Killed(f"killed after step {step}")

    def build(*args: Any, **kwargs: Any) -> Any:
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(Kill())
        return trainer

    original = run.build_trainer
    with mock.patch.object(run, "build_trainer", build), contextlib.suppress(Killed):
        yield


def trajectories(root: Path, stop_at: int | None = None) -> dict[str, list[float]]:
    """``{"clip", "probe", "vocabfine", "labeller"}`` -> STEPS training losses, seed 0, on the CPU.

    ``stop_at``: each run is first killed after that many steps (checkpoints every 2 steps, 3 batches
    per epoch: ``last.ckpt`` is mid-epoch) and then resumed with ``resume="latest"``, so the losses
    show whether a resumed run continues exactly.
    """
    def train(fn: Any, *args: Any, out: Path, **kwargs: Any) -> list[float]:
        if stop_at is not None:
            with interrupted_at(stop_at):
                fn(*args, out=str(out), trainer=_trainer(), **kwargs)
            kwargs["resume"] = "latest"
        return train_losses(fn(*args, out=str(out), trainer=_trainer(), **kwargs))

    import json

    import torch
    from support.prepared_clip import write_prepared
    from support.prepared_findings import base_bundle, tiny_model, write_findings_prepared

    from radlens.data.datasets import ClipDataConfig
    from radlens.data.labelled import FindingDataConfig
    from radlens.train.classfine import train_classfine
    from radlens.train.clip import train_clip
    from radlens.train.config import LossConfig, OptimConfig
    from radlens.train.labeller import train_labeller
    from radlens.train.vocabfine import train_vocabfine
    from train.conftest import MICRO  # type: ignore[import-not-found]

    out: dict[str, list[float]] = {}
    model = root / "micro.json"
    model.write_text(json.dumps(MICRO))
    prep2d = write_prepared(root / "prep2d", shape=(32, 32), patients={"train": 3, "validation": 1, "test": 1})
    out["clip"] = train(train_clip, str(prep2d), data=ClipDataConfig(batch_size=8), model=str(model),
                        optim=OptimConfig(lr=1e-3, warmup_steps=1), loss=LossConfig(mode="multi_positive"), out=root / "clip")

    prepared = write_findings_prepared(root / "prep3d")
    torch.manual_seed(0)
    base = base_bundle(root / "base", prepared, tiny_model(root / "tiny.json"))
    data = FindingDataConfig(batch_size=8)
    out["probe"] = train(train_classfine, str(base), str(prepared), data=data, out=root / "probe",
                         optim=OptimConfig(lr=1e-2, warmup_steps=2), n_bootstrap=5)
    out["vocabfine"] = train(train_vocabfine, str(base), str(prepared), data=data, out=root / "vocabfine",
                             optim=OptimConfig(lr=3e-3, warmup_steps=2), n_bootstrap=5)
    out["labeller"] = train(train_labeller, str(prepared), out=root / "labeller", encoder="tiny", sections=["findings"],
                            context_length=32, batch_size=8, optim=OptimConfig(lr=3e-3, warmup_steps=2), n_bootstrap=5)
    return out
