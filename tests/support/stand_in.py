"""A stand-in for the Lightning Trainer, with just what a DataModule's loaders read of it."""

from __future__ import annotations

from types import SimpleNamespace


def stand_in_trainer() -> SimpleNamespace:
    """What ``RadlensDataModule.train_dataloader`` reads of ``self.trainer``: rank, world size, batches processed."""
    progress = SimpleNamespace(current=SimpleNamespace(processed=0))
    epoch_loop = SimpleNamespace(batch_progress=progress)
    return SimpleNamespace(global_rank=0, world_size=1, fit_loop=SimpleNamespace(epoch_loop=epoch_loop))
