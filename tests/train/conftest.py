"""Shared fixtures of the training tests: a tiny prepared dataset and one short training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.prepared_clip import quick_trainer, write_prepared

# A micro 2D CLIP (32x32 slices) so that CPU training steps take milliseconds.
MICRO = {
    "image": {"kind": "vit", "input_shape": [32, 32], "patch_size": [8, 8], "hidden_size": 32, "mlp_dim": 64,
              "num_layers": 1, "num_heads": 2, "pooling": "cls"},
    "text": {"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
             "vocab_size": 256, "context_length": 64, "pooling": "cls", "on_overflow": "error"},
    "embed_dim": 32,
}


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "micro.json"
    path.write_text(json.dumps(MICRO))
    return str(path)


@pytest.fixture(scope="session")
def prepared_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3/1/1 patients x 2 protocols x 4 slices of 32 x 32: 24 training slices."""
    return write_prepared(tmp_path_factory.mktemp("prep2d"), shape=(32, 32), patients={"train": 3, "validation": 1, "test": 1})


@pytest.fixture(scope="session")
def trained_run(prepared_2d: Path, micro_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 steps of multi-positive training, validated at steps 4 and 8."""
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip
    from radlens.train.config import LossConfig, OptimConfig

    return train_clip(
        str(prepared_2d),
        str(tmp_path_factory.mktemp("run") / "run"),
        ClipDataConfig(batch_size=8),
        model=micro_model,
        optim=OptimConfig(lr=1e-3, warmup_steps=1),
        trainer=quick_trainer(max_steps=8, checkpoint_every_n_steps=4),
        loss=LossConfig(mode="multi_positive"),
    )
