"""Shared fixtures of the training tests: a tiny prepared dataset and one short training run."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_prepared import write_prepared


def quick_trainer(**changes):
    from radlens.train.config import TrainerConfig

    base = dict(max_steps=4, val_every_n_steps=4, checkpoint_every_n_steps=2, progress_bar=False, log_every_n_steps=1)
    return TrainerConfig(**{**base, **changes})


@pytest.fixture(scope="session")
def prepared_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prep2d"), patients={"train": 3, "validation": 1, "test": 1})


@pytest.fixture(scope="session")
def trained_run(prepared_2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 steps of multi-positive training, validated at steps 4 and 8."""
    from radlens.train.clip import train_clip
    from radlens.train.config import ClipDataConfig, LossConfig, OptimConfig

    return train_clip(
        ClipDataConfig(path=str(prepared_2d), batch_size=8),
        model="tiny-vit2d",
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        trainer=quick_trainer(max_steps=8, checkpoint_every_n_steps=4),
        loss=LossConfig(mode="multi_positive"),
        out=str(tmp_path_factory.mktemp("run") / "run"),
    )
