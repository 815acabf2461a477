"""LightningDataModules: one per kind of training data, each building its own datasets and loaders.

Training loaders are seeded, rank-aware and resumable mid-epoch: radlens' batch sampler
(:class:`radlens.data.samplers.ClipBatchSampler`) takes the rank and world size from
``self.trainer`` when Lightning asks for the loader, and the loader reports the position the
trainer has really processed so a checkpoint can resume exactly there. Validation loaders run the
whole split in order on every rank. A task never builds loaders and a run never passes a Trainer.

Datasets are built when the module is made (they are light: tables and memory maps), so a
trainer can check them and size its model before training starts.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np

from radlens.data.augment import AugmentConfig
from radlens.errors import InputError
from radlens.io.prepared import PreparedDataset

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from radlens.data.datasets import ClipDataConfig, ClipDataset
    from radlens.data.labelled import FindingDataset, ReportDataset


class RadlensDataModule(pl.LightningDataModule, abc.ABC):
    """Base: ``train_set`` and optional ``val_set`` (built by subclasses), one collate function.

    Subclasses set the datasets in ``__init__``, give :meth:`collate_fn` and may override :meth:`groups`
    (items of one group never share a training batch).
    """

    train_set: Any
    val_set: Any | None

    def __init__(self, batch_size: int, eval_batch_size: int | None, num_workers: int, seed: int) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed

    @abc.abstractmethod
    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        """The loaders' collate function (a small picklable object, for worker processes)."""

    def groups(self) -> np.ndarray | None:
        return None

    def strata(self) -> np.ndarray | None:
        """Per training item, a stratum that gets an equal share of every batch (None: no balancing)."""
        return None

    def preprocessing(self) -> dict[str, Any]:
        """What a model trained on this data expects of its inputs (saved in its bundle)."""
        return {}

    def _loader_kwargs(self) -> dict[str, Any]:
        import torch

        return {"collate_fn": self.collate_fn(), "num_workers": self.num_workers,
                "persistent_workers": self.num_workers > 0, "pin_memory": torch.cuda.is_available()}

    def train_dataloader(self) -> DataLoader:
        import torch

        from radlens.data.samplers import ClipBatchSampler, resumable_loader

        trainer = self.trainer
        assert trainer is not None, "a DataModule's loaders are made by the Trainer"
        sampler = ClipBatchSampler(len(self.train_set), self.batch_size, seed=self.seed, groups=self.groups(),
                                   rank=trainer.global_rank, world_size=trainer.world_size, strata=self.strata())

        def progress() -> int:
            return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

        # Its own generator: creating iterators must not consume the global RNG (resume exactness).
        return resumable_loader(self.train_set, sampler, progress, generator=torch.Generator().manual_seed(self.seed),
                                **self._loader_kwargs())

    def val_dataloader(self) -> Any:
        from torch.utils.data import DataLoader

        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, shuffle=False, **self._loader_kwargs())


def preprocessing_from_card(card: dict[str, Any]) -> dict[str, Any]:
    """What a model's inputs must look like, from the dataset card: shape, dims, intensity, prepare settings."""
    prepare_cfg = card.get("config") or {}
    out = {k: card[k] for k in ("dims", "modality", "array_shape", "dtype", "intensity") if k in card}
    out["prepare"] = {k: prepare_cfg[k] for k in ("spatial", "intensity", "slicing", "already_hu") if k in prepare_cfg}
    return out


def has_split(prepared: PreparedDataset, split: str) -> bool:
    """Whether the items table (slices for 2D, series for 3D) has rows in ``split``."""
    table = prepared.slices if prepared.dims == 2 else prepared.series
    return table is not None and bool((table["split"] == split).any())


class ImageTextDataModule(RadlensDataModule):
    """Image-text pairs (2D slices or 3D volumes with captions or reports) for contrastive training.

    ``tokenize`` (the model's tokenizer) is set once the model exists; the collate function
    tokenises in the loader workers.
    """

    def __init__(self, prepared: PreparedDataset, cfg: ClipDataConfig, seed: int = 0) -> None:
        from radlens.data.datasets import ClipDataset

        super().__init__(cfg.batch_size, cfg.eval_batch_size, cfg.num_workers, seed)
        if prepared.card.get("array_shape") is None:
            raise InputError(prepared.path, "arrays of different shapes (card array_shape is null): a batch needs one shape")
        self.prepared, self.cfg = prepared, cfg
        augment = cfg.augment if cfg.augment.enabled else None
        self.train_set: ClipDataset = ClipDataset(prepared, "train", cfg.text_column, augment, cfg.caption_dropout, seed,
                                                  sentence_dropout=cfg.sentence_dropout)
        self.val_set: ClipDataset | None = (ClipDataset(prepared, "validation", cfg.eval_text_column or cfg.text_column)
                                            if has_split(prepared, "validation") else None)
        self.tokenize: Callable[[Sequence[str]], Any] | None = None

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from radlens.data.datasets import ClipCollate

        assert self.tokenize is not None, "set ImageTextDataModule.tokenize to the model's tokenizer first"
        return ClipCollate(self.tokenize)

    def groups(self) -> np.ndarray | None:
        if self.cfg.sampler == "random":
            return None
        return self.train_set.group_ids("series" if self.cfg.sampler == "distinct_series" else "label")

    def preprocessing(self) -> dict[str, Any]:
        return preprocessing_from_card(self.prepared.card)


class LabelledImageDataModule(RadlensDataModule):
    """Images with 0/1 finding targets (ClassFine, VocabFine): batches ``{"inputs": {"images"}, "targets", "index"}``."""

    def __init__(self, prepared: PreparedDataset, findings: Sequence[str], batch_size: int, eval_batch_size: int | None = None,
                 num_workers: int = 0, augment: AugmentConfig | None = None, seed: int = 0) -> None:
        from radlens.data.labelled import FindingDataset

        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.prepared = prepared
        self.train_set: FindingDataset = FindingDataset(prepared, "train", findings, augment, seed)
        self.val_set: FindingDataset | None = (FindingDataset(prepared, "validation", findings)
                                               if has_split(prepared, "validation") else None)

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from radlens.data.labelled import collate_findings

        return collate_findings

    def preprocessing(self) -> dict[str, Any]:
        return preprocessing_from_card(self.prepared.card)


class LabelledTextDataModule(RadlensDataModule):
    """Reports with 0/1 finding targets (the report labeller), tokenised by ``tokenize`` in the workers."""

    def __init__(self, train_set: ReportDataset, val_set: ReportDataset | None, tokenize: Callable[[Sequence[str]], Any],
                 batch_size: int, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, None, num_workers, seed)
        self.train_set, self.val_set, self.tokenize = train_set, val_set, tokenize

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from radlens.data.labelled import ReportCollate

        return ReportCollate(self.tokenize)


if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from radlens.data.bags import BagDataset, TargetKind
    from radlens.data.views import MocoDataConfig, TwoViewDataset, ViewConfig


class BagDataModule(RadlensDataModule):
    """Bags of precomputed slice embeddings (one HDF5 file per study) with targets, for attention-MIL.

    Batches ``{"feats": (B, N_max, D), "mask": (B, N_max), "targets", "index", "slice_index"}``
    (:func:`radlens.data.bags.collate_bags`). ``train_table``/``val_table`` are tables (or CSV/Parquet
    files) of one study per row; select a split with ``table[table["split"] == "train"]``.
    ``max_instances`` caps the slices read per bag (random per epoch in training, evenly spaced in
    validation). ``allow_missing`` keeps empty binary targets as NaN. ``feature_dim`` sizes the MIL head;
    ``preprocessing()`` records it with the first file's attributes (encoder, radlens version), which a
    model trained here depends on.
    """

    def __init__(self, train_table: pd.DataFrame | str | Path, val_table: pd.DataFrame | str | Path | None,
                 target_columns: Sequence[str], batch_size: int, eval_batch_size: int | None = None, num_workers: int = 0,
                 feature_column: str = "path", root: str | Path | None = None, max_instances: int | None = None,
                 target_kind: TargetKind = "auto", seed: int = 0, allow_missing: bool = False) -> None:
        from radlens.data.bags import BagDataset

        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.train_set: BagDataset = BagDataset(train_table, feature_column, target_columns, root,
                                                max_instances=max_instances, seed=seed, target_kind=target_kind,
                                                allow_missing=allow_missing)
        self.val_set: BagDataset | None = None
        if val_table is not None:
            # The validation targets must be of the training kind (a split with only 0 and 1 class ids is still classes).
            self.val_set = BagDataset(val_table, feature_column, target_columns, root, max_instances=max_instances,
                                      seed=seed, target_kind=self.train_set.target_kind,  # type: ignore[arg-type]
                                      allow_missing=allow_missing)
            if self.val_set.dim != self.train_set.dim:
                raise InputError(self.val_set.paths[0], f"validation features have D={self.val_set.dim}, "
                                                        f"training features ({self.train_set.paths[0]}) D={self.train_set.dim}")

    @property
    def feature_dim(self) -> int:
        return int(self.train_set.dim)

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from radlens.data.bags import collate_bags

        return collate_bags

    def preprocessing(self) -> dict[str, Any]:
        return {"features": {"dim": self.feature_dim, "attrs": dict(self.train_set.attrs)}}


class ImageViewsDataModule(RadlensDataModule):
    """Two augmented views of each 2D slice (MoCo v3 style): batches ``{"view1", "view2": (B, C, H, W),
    "index", "lesion", "series_id", "patient_id"}`` (:func:`radlens.data.views.collate_views`).

    ``view2_cfg`` (default: ``view_cfg``) draws the second view differently. ``sampler``
    ``distinct_series`` keeps slices of one series out of the same training batch (neighbouring
    slices are near-duplicates: false negatives for InfoNCE); ``balanced`` gives lesion slices
    (``lesion`` 1) half of every global batch. Validation (split ``validation``, when it has slices)
    gives each slice unaugmented as both views, or, with ``val_augment``, views drawn as in
    training with the seeds of epoch 0 (the same pairs at every validation). ``lesion_views``,
    ``lesion_labels``, ``lesion_scale``, ``windows``, ``window_mode``: :class:`radlens.data.views.TwoViewDataset`;
    :meth:`from_config` takes them from a :class:`radlens.data.views.MocoDataConfig`.
    """

    def __init__(self, prepared: PreparedDataset | str | Path, view_cfg: ViewConfig | None, batch_size: int,
                 eval_batch_size: int | None = None, num_workers: int = 0, view2_cfg: ViewConfig | None = None,
                 sampler: str = "random", seed: int = 0, *, lesion_views: bool = False,
                 lesion_labels: Sequence[int] | None = None, lesion_scale: tuple[float, float] = (0.05, 0.3),
                 windows: Sequence[Sequence[float]] | None = None, window_mode: str = "channels",
                 val_augment: bool = False) -> None:
        from radlens.data.views import TwoViewDataset
        from radlens.errors import ConfigError

        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if sampler not in ("random", "distinct_series", "balanced"):
            raise ConfigError(f"sampler must be 'random', 'balanced' or 'distinct_series', got {sampler!r}")
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
        self.sampler, self.val_augment = sampler, val_augment
        options: dict[str, Any] = {"lesion_views": lesion_views, "lesion_labels": lesion_labels, "lesion_scale": lesion_scale,
                                   "windows": windows, "window_mode": window_mode}
        self.train_set: TwoViewDataset = TwoViewDataset(self.prepared, "train", view_cfg, seed, view2=view2_cfg, **options)
        self.val_set: TwoViewDataset | None = (TwoViewDataset(self.prepared, "validation", view_cfg, seed, view2=view2_cfg,
                                                              **options)
                                               if has_split(self.prepared, "validation") else None)

    @classmethod
    def from_config(cls, prepared: PreparedDataset | str | Path, cfg: MocoDataConfig, seed: int = 0) -> ImageViewsDataModule:
        """The DataModule of a ``radlens train moco`` data config."""
        return cls(prepared, cfg.view, cfg.batch_size, cfg.eval_batch_size, cfg.num_workers, cfg.view2, cfg.sampler, seed,
                   lesion_views=cfg.lesion_views, lesion_labels=cfg.lesion_labels, lesion_scale=cfg.lesion_scale,
                   windows=cfg.windows, window_mode=cfg.window_mode, val_augment=cfg.val_augment)

    @property
    def channels(self) -> int:
        """Channels of an image (the number of windows in ``channels`` mode, else 1)."""
        return int(self.train_set.channels)

    def strata(self) -> np.ndarray | None:
        return (self.train_set.lesions == 1).astype(np.int64) if self.sampler == "balanced" else None

    def val_dataloader(self) -> Any:
        if self.val_set is None or not self.val_augment:
            return super().val_dataloader()
        from torch.utils.data import DataLoader

        keys = [(i, 0) for i in range(len(self.val_set))]  # training-like views, the same at every validation
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, sampler=keys, **self._loader_kwargs())

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from radlens.data.views import collate_views

        return collate_views

    def groups(self) -> np.ndarray | None:
        import pandas as pd

        return pd.factorize(pd.Series(self.train_set.series_ids))[0] if self.sampler == "distinct_series" else None

    def preprocessing(self) -> dict[str, Any]:
        """The card's preprocessing; with windows also ``windows`` (HU ``[low, high]`` each mapped to
        [0, 1] from the stored values: :mod:`radlens.data.windows`) and ``window_mode``."""
        out = preprocessing_from_card(self.prepared.card)
        if self.train_set.windows is not None:
            out.update(windows=[list(w) for w in self.train_set.windows], window_mode=self.train_set.window_mode)
        return out


class ImageMaskDataModule(RadlensDataModule):
    """Images with their label maps (segmentation, mask-conditioned generation): batches of
    :class:`radlens.data.masks.ImageMaskDataset` items ``{"image", "mask", "labels_present", "boxes",
    "index"}``, spatial augmentation applied to image and mask together (nearest for the mask).

    ``masked_only`` False keeps items without a mask (their mask is -1, an ignore value).
    ``series_ids`` keeps only those series' items; ``intensity`` (training items only) is
    :class:`radlens.data.masks.ImageMaskDataset`'s intensity augmentation.
    """

    def __init__(self, prepared: PreparedDataset, batch_size: int, eval_batch_size: int | None = None,
                 num_workers: int = 0, augment: AugmentConfig | None = None, masked_only: bool = True,
                 seed: int = 0, series_ids: Sequence[str] | None = None,
                 intensity: Callable[[Any, Any, int], Any] | None = None) -> None:
        from radlens.data.masks import ImageMaskDataset

        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.prepared = prepared
        self.train_set: ImageMaskDataset = ImageMaskDataset(prepared, "train", augment, seed, masked_only, series_ids,
                                                            intensity)
        self.val_set: ImageMaskDataset | None = (ImageMaskDataset(prepared, "validation", masked_only=masked_only,
                                                                  series_ids=series_ids)
                                                 if has_split(prepared, "validation") else None)

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from torch.utils.data import default_collate

        return default_collate

    def preprocessing(self) -> dict[str, Any]:
        return {**preprocessing_from_card(self.prepared.card), "labels": self.prepared.card.get("labels", {})}


if TYPE_CHECKING:
    from radlens.data.generation import GenerationDataset, ItemSource
    from radlens.data.generation_prompts import PromptBuilder


class GenerationDataModule(RadlensDataModule):
    """Image + mask + prompt items of a prepared 2D dataset for the generative pipeline (VAE, LDM,
    ControlNet): batches ``{"image", "mask", "prompt" (list of str), "index"}`` of
    :class:`radlens.data.generation.GenerationDataset` over ``sources``; validation (split
    ``validation``) has the sources that have validation slices, without prompt dropout or augmentation.
    """

    def __init__(self, prepared: PreparedDataset, sources: Sequence[ItemSource], batch_size: int,
                 eval_batch_size: int | None = None, num_workers: int = 0, prompts: PromptBuilder | None = None,
                 prompt_dropout: float = 0.0, augment: AugmentConfig | None = None, seed: int = 0) -> None:
        from radlens.data.generation import GenerationDataset

        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.prepared = prepared
        self.train_set: GenerationDataset = GenerationDataset(prepared, "train", sources, prompts, prompt_dropout, augment, seed)
        val = GenerationDataset(prepared, "validation", sources, prompts, require_each=False) if has_split(prepared, "validation") else None
        self.val_set: GenerationDataset | None = val if val is not None and len(val) else None

    def collate_fn(self) -> Callable[[list[dict[str, Any]]], Any]:
        from torch.utils.data import default_collate

        return default_collate

    def preprocessing(self) -> dict[str, Any]:
        return {**preprocessing_from_card(self.prepared.card), "labels": self.prepared.card.get("labels", {})}
