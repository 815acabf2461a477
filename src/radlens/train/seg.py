"""``radlens train seg``: a segmenter (MONAI UNet / DynUNet) on the images and label maps of a prepared dataset.

2D slices or 3D volumes, as the dataset was prepared; any label table (the dataset's ids are kept,
``out_channels`` is the number of labels including background). Training images get the usual light
spatial augmentation (image and mask together) and, by default, **strong intensity randomisation**
(:mod:`radlens.data.intensity_augment`: per-label random intensity remaps, bias field, gamma,
inversion, histogram shifts, noise), so that a segmenter trained on one MRI contrast also segments
others: MRGen's filter judges generated T2-weighted images with a segmenter trained on T1-weighted
masks. ``data.contrasts`` trains on some contrast classes only (the series' ``contrast`` column).

The bundles (``OUT/best``, ``OUT/last``) hold the segmenter (``load_model(bundle, kind="segmenter")``)
with the dataset's preprocessing and its label table in ``bundle.json`` -> ``preprocessing.labels``
(:func:`radlens.models.segmenter.segmenter_labels`); ``best`` is chosen by ``val/dice``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from radlens.data.augment import AugmentConfig
from radlens.data.intensity_augment import IntensityAugmentConfig
from radlens.errors import ConfigError, InputError
from radlens.train.config import OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.run import resolve_resume

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset
    from radlens.models.segmenter import Segmenter

# nnU-Net-like Adam settings for a small CPU-trainable network (nnU-Net itself uses SGD 1e-2 with poly decay).
SEG_OPTIM = OptimConfig(lr=2e-3, weight_decay=1e-4, betas=(0.9, 0.999), eps=1e-8, warmup_steps=20)


@dataclass
class SegDataConfig:
    """Batches, item selection and augmentation of ``radlens train seg``.

    Attributes:
        batch_size: training items (slices or volumes) per batch.
        eval_batch_size: validation items per batch (default: batch_size).
        num_workers: DataLoader worker processes.
        contrasts: train and validate on the series of these contrast classes only (series column
            ``contrast``, e.g. ``[T1w]``); all series when empty.
        augment: spatial augmentation of image and mask together (flip, small affine) plus light intensity jitter.
        intensity: strong intensity randomisation of training images (per-label remap, bias, gamma, noise).
    """

    batch_size: int = 16
    eval_batch_size: int | None = None
    num_workers: int = 0
    contrasts: list[str] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    intensity: IntensityAugmentConfig = field(default_factory=IntensityAugmentConfig)


def contrast_series(prepared: PreparedDataset, contrasts: Sequence[str] | None) -> list[str] | None:
    """The series ids of these contrast classes (series column ``contrast``), or None for all series."""
    if not contrasts:
        return None
    series = prepared.series
    if "contrast" not in series.columns:
        raise InputError(prepared.path / "series.parquet", "has no 'contrast' column: series cannot be chosen by contrast class")
    chosen = series.loc[series["contrast"].isin(list(contrasts)), "series_id"].tolist()
    if not chosen:
        found = sorted(series["contrast"].dropna().astype(str).unique())
        raise InputError(prepared.path / "series.parquet", f"no series of contrast {list(contrasts)}; it has {found}")
    return chosen


def segmenter_for(model: str, prepared: PreparedDataset) -> Segmenter:
    """A fresh segmenter from a registry name or JSON config, sized for the dataset: ``spatial_dims`` from its
    dims, ``out_channels``/``label_ids`` from its label table."""
    from radlens.models.components import kind_of
    from radlens.models.registry import architecture, build_model, get_config

    spec = architecture(get_config(model))
    kind = kind_of(spec)
    if kind.family != "segmenter":
        raise ConfigError(f"model {model!r} is a {kind.name} ({kind.family}) config; train seg needs a segmenter "
                          "(unet-seg, dynunet-seg)")
    labels = prepared.labels
    if len(labels) < 2:
        raise InputError(prepared.path / "dataset.json", "no label table (prepared without masks): nothing to segment")
    ids = sorted(labels)
    spec = {**spec, "spatial_dims": prepared.dims, "out_channels": len(ids), "label_ids": ids}
    try:
        return build_model(spec)
    except ConfigError as err:
        raise ConfigError(f"model {model!r} for the {prepared.dims}D dataset {prepared.path}: {err}") from err


def train_seg(
    prepared: str,
    out: str,
    model: str = "seg-unet-tiny",
    data: SegDataConfig = SegDataConfig(),
    optim: OptimConfig = SEG_OPTIM,
    trainer: TrainerConfig = TrainerConfig(),
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a segmenter on the images and label maps of a prepared dataset; returns the run folder.

    Args:
        prepared: prepared dataset folder with masks (2D slices or 3D volumes).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` segmenter bundles).
        model: registry name or JSON file of a segmenter config (seg-unet-tiny, seg-dynunet-2d, seg-dynunet-3d);
            spatial_dims, out_channels and label_ids are taken from the data.
        data: batches, contrast classes to train on, spatial and intensity augmentation.
        optim: AdamW + warm-up/cosine.
        trainer: devices, precision, steps, validation and checkpoint intervals (monitor: ``val/dice``).
        seed: seeds weights, batch order and augmentation.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.intensity_augment import IntensityAugment
    from radlens.data.modules import ImageMaskDataModule
    from radlens.io.prepared import PreparedDataset
    from radlens.train.run import run
    from radlens.train.seg_task import SegTask

    validate(optim, trainer, [
        (data.batch_size >= 1, f"data.batch_size must be >= 1, got {data.batch_size}"),
        (data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}"),
    ])
    run_dir = Path(out)
    resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    ds = PreparedDataset(prepared)
    if ds.card.get("array_shape") is None:
        raise InputError(ds.path, "arrays of different shapes (card array_shape is null): a batch needs one shape")
    segmenter = segmenter_for(model, ds)
    series_ids = contrast_series(ds, data.contrasts)
    intensity = IntensityAugment(data.intensity, ds.dims) if data.intensity.enabled else None
    datamodule = ImageMaskDataModule(ds, data.batch_size, data.eval_batch_size, data.num_workers,
                                     augment=data.augment if data.augment.enabled else None, seed=seed,
                                     series_ids=series_ids, intensity=intensity)
    labels = ds.labels
    config = {"prepared": str(prepared), "out": str(out), "model": model, "data": _data_dict(data), "optim": as_dict(optim),
              "trainer": as_dict(trainer), "seed": seed, "resume": resume}
    facts = {"train_items": len(datamodule.train_set),
             "validation_items": len(datamodule.val_set) if datamodule.val_set is not None else 0,
             "contrasts": list(data.contrasts or []), "labels": {str(k): v for k, v in sorted(labels.items())},
             "intensity_augmentation": data.intensity.enabled}
    task = SegTask(segmenter, labels, optim)
    return run(task, datamodule, trainer, run_dir, resume, config, seed, facts).folder


def _data_dict(data: SegDataConfig) -> dict[str, object]:
    """The data options as plain YAML-able values (nested configs as dicts, tuples as lists)."""
    out = as_dict(data)
    out["augment"], out["intensity"] = as_dict(data.augment), as_dict(data.intensity)
    return out
