"""Loss trajectories of every trainer on tiny data, for the 'same seed, same losses' refactoring guard.

``tests/train/golden_losses.json`` holds the per-step training losses each trainer gave before the
trainers moved onto the shared task base and run function; :func:`trajectories` recomputes them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

STEPS = 6


def train_losses(run: Path) -> list[float]:
    """Per-step ``train/loss`` of a run's CSV logs (all (re)starts, in order)."""
    files = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"))
    log = pd.concat([pd.read_csv(f) for f in files], ignore_index=True).dropna(subset=["train/loss"])
    return [float(v) for v in log.sort_values("step")["train/loss"]]


def _trainer() -> object:
    from support.prepared_findings import quick_trainer

    return quick_trainer(max_steps=STEPS, val_every_n_steps=3, checkpoint_every_n_steps=3, log_every_n_steps=1)


def trajectories(root: Path) -> dict[str, list[float]]:
    """``{"clip", "probe", "vocabfine", "labeller"}`` -> STEPS training losses, seed 0, on the CPU."""
    import json

    import torch
    from support.prepared_clip import write_prepared
    from support.prepared_findings import base_bundle, tiny_model, write_findings_prepared

    from radlens.train.clip import train_clip
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.config import LossConfig, OptimConfig
    from radlens.train.labeller import train_labeller
    from radlens.data.labelled import FindingDataConfig
    from radlens.train.probe_train import train_probe
    from radlens.train.vocabfine import train_vocabfine

    from train.conftest import MICRO  # type: ignore[import-not-found]

    out: dict[str, list[float]] = {}
    model = root / "micro.json"
    model.write_text(json.dumps(MICRO))
    prep2d = write_prepared(root / "prep2d", shape=(32, 32), patients={"train": 3, "validation": 1, "test": 1})
    run = train_clip(ClipDataConfig(path=str(prep2d), batch_size=8), model=str(model), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                     trainer=_trainer(), loss=LossConfig(mode="multi_positive"), out=str(root / "clip"))
    out["clip"] = train_losses(run)

    prepared = write_findings_prepared(root / "prep3d")
    torch.manual_seed(0)
    base = base_bundle(root / "base", prepared, tiny_model(root / "tiny.json"))
    data = FindingDataConfig(path=str(prepared), batch_size=8)
    out["probe"] = train_losses(train_probe(data, str(base), out=str(root / "probe"), optim=OptimConfig(lr=1e-2, warmup_steps=2),
                                            trainer=_trainer(), n_bootstrap=5))
    out["vocabfine"] = train_losses(train_vocabfine(data, str(base), out=str(root / "vocabfine"),
                                                    optim=OptimConfig(lr=3e-3, warmup_steps=2), trainer=_trainer()))
    out["labeller"] = train_losses(train_labeller(
        str(prepared), str(root / "labeller"), encoder="tiny", sections=["findings"], context_length=32, batch_size=8,
        optim=OptimConfig(lr=3e-3, warmup_steps=2), trainer=_trainer(), n_bootstrap=5))
    return out
