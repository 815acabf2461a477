"""``radlens train moco``: MoCo v3 and LeCL (lesion-aware MoCo) on the 2D slices of a prepared dataset.

MoCo v3 (Chen, Xie & He 2021): two augmented views of a slice; the base encoder + projector +
predictor gives queries, a momentum copy gives keys; the symmetrised InfoNCE against the keys of
the global batch (:mod:`radlens.losses.moco`). LeCL (CLEAR, Ligero et al. 2025) adds, from any
lesion source of the prepared dataset (the slices' ``boxes``/``labels_present`` of its masks, or
its ``lesion`` column): a lesion-centred crop vs the whole slice as the views of a lesion slice
(``data.lesion_views``), the lesion keys a second time in the denominator (``loss.lesion_weight``),
and batches half lesion slices (``data.sampler balanced``). Without those options it is plain
MoCo v3. CT slices can be re-windowed to one or several HU windows (``data.windows``).

The encoder is any registered image encoder (``vit`` with or without ``conv_stem``, ``swin``,
``resnet``, ``gated_cnn``) named by a registry name or a JSON file; its ``input_shape`` and
``in_channels`` always come from the data (the slice shape; the number of windows in
``channels`` mode, else 1). The bundles hold the whole ``moco`` component (base, heads and
momentum copies); ``model.encode(images)`` is the slice embedding.

The learning rate is ``optim.lr * B / 256`` (MoCo v3's rule; ``B`` the global batch of one
optimiser step), run on one CPU, one GPU, or several with ``--trainer.strategy ddp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.data.views import MocoDataConfig
from radlens.errors import ConfigError, InputError
from radlens.train.config import OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.moco_config import MocoConfig, MocoLossConfig
from radlens.train.run import resolve_resume

if TYPE_CHECKING:
    from radlens.data.modules import ImageViewsDataModule
    from radlens.models.moco import MoCo

# MoCo v3's ViT recipe: AdamW, base lr 1.5e-4 (scaled by batch / 256), weight decay 0.1, PyTorch's betas.
MOCO_OPTIM = OptimConfig(lr=1.5e-4, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, warmup_steps=100)


def train_moco(
    prepared: str,
    out: str,
    data: MocoDataConfig = MocoDataConfig(),
    encoder: str = "vit-conv-small",
    optim: OptimConfig = MOCO_OPTIM,
    trainer: TrainerConfig = TrainerConfig(),
    loss: MocoLossConfig = MocoLossConfig(),
    moco: MocoConfig = MocoConfig(),
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a MoCo v3 / LeCL slice encoder on a prepared 2D dataset; returns the run folder.

    Args:
        prepared: the prepared 2D dataset folder (train split to learn, validation split to check).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles).
        data: batches, sampler (random, balanced, distinct_series), HU windows,
            LeCL lesion views and labels, the two views' augmentations.
        encoder: registry name or JSON file of an image encoder config (vit, swin, resnet, gated_cnn);
            input_shape and in_channels are taken from the data.
        optim: AdamW + warm-up/cosine; ``lr`` is the base lr for a global batch of 256.
        trainer: devices, strategy, precision, steps, validation and checkpoint intervals
            (monitor: ``val/loss``; ``val/knn_lesion_bacc`` when validation has lesion labels).
        loss: temperature and LeCL's lesion_weight (0: plain MoCo v3).
        moco: projector/predictor sizes, momentum and its cosine ramp, validation kNN k.
        seed: seeds weights, batch order and views.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.modules import ImageViewsDataModule
    from radlens.io.prepared import PreparedDataset
    from radlens.train.moco_task import MocoTask
    from radlens.train.run import run

    validate(optim, trainer, [
        (bool(prepared), "prepared: the prepared dataset folder is required"),
        (data.batch_size >= 2, f"data.batch_size must be >= 2 for a contrastive loss, got {data.batch_size}"),
        (data.eval_batch_size is None or data.eval_batch_size >= 2,
         f"data.eval_batch_size must be >= 2 (batch norm), got {data.eval_batch_size}"),
        (data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}"),
        (loss.temperature > 0, f"loss.temperature must be > 0, got {loss.temperature}"),
        (loss.lesion_weight >= 0, f"loss.lesion_weight must be >= 0, got {loss.lesion_weight}"),
    ])
    run_dir = Path(out)
    resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = PreparedDataset(prepared)
    if dataset.dims == 2 and dataset.card.get("array_shape") is None:
        raise InputError(dataset.path, "slices of different shapes (card array_shape is null): a batch needs one shape")
    datamodule = ImageViewsDataModule.from_config(dataset, data, seed)
    facts = lesion_facts(datamodule, data, loss)
    model = moco_model(encoder, moco, datamodule)
    config = {"prepared": str(prepared), "out": str(out), "data": as_dict(data), "encoder": encoder,
              "optim": as_dict(optim), "trainer": as_dict(trainer), "loss": as_dict(loss), "moco": as_dict(moco),
              "seed": seed, "resume": resume}
    facts["lr_rule"] = "optim.lr * global_batch / 256 (global_batch = data.batch_size x devices x accumulate_grad_batches)"
    task = MocoTask(model, data.batch_size, loss, optim, moco)
    return run(task, datamodule, trainer, run_dir, resume, config, seed, facts).folder


def lesion_facts(datamodule: ImageViewsDataModule, data: MocoDataConfig, loss: MocoLossConfig) -> dict[str, Any]:
    """Lesion counts of the training split for ``run.json``; InputError when a LeCL option has no lesion to work on."""
    train = datamodule.train_set
    n_lesion = int((train.lesions == 1).sum())
    n_boxed = sum(1 for boxes in train.boxes if boxes)
    where = datamodule.prepared.path
    wanted = f"labels {data.lesion_labels}" if data.lesion_labels is not None else "any label > 0"
    for option, used in (("loss.lesion_weight > 0", loss.lesion_weight > 0), ("data.sampler balanced", data.sampler == "balanced"),
                         ("data.lesion_views", data.lesion_views)):
        if used and n_lesion == 0:
            raise InputError(where, f"{option} needs lesion slices, but no training slice is marked as lesion ({wanted}; "
                                    "prepare the dataset with masks or a lesion table)")
    if data.lesion_views and n_boxed == 0:
        raise InputError(where, f"data.lesion_views needs lesion boxes (the slices' boxes column, {wanted}); no training slice has one")
    return {"train_items": len(train), "train_lesion_items": n_lesion, "train_slices_with_boxes": n_boxed}


def moco_model(encoder: str, moco: MocoConfig, datamodule: ImageViewsDataModule) -> MoCo:
    """A fresh ``moco`` component around the encoder config ``encoder``, sized for the data's images."""
    from radlens.models.components import kind_of
    from radlens.models.registry import architecture, build_model, get_config

    spec = architecture(get_config(encoder))
    kind = kind_of(spec)
    if kind.family != "image encoder":
        raise ConfigError(f"encoder {encoder!r} is a {kind.name} ({kind.family}) config; train moco needs an image encoder "
                          "(vit, swin, resnet, gated_cnn)")
    shape = [int(s) for s in datamodule.prepared.card["array_shape"]]
    spec = {**spec, "input_shape": shape, "in_channels": datamodule.channels}
    heads = {"dim": moco.dim, "hidden": moco.hidden, "proj_layers": moco.proj_layers, "pred_layers": moco.pred_layers}
    try:
        return build_model({"kind": "moco", "encoder": spec, **heads})
    except ConfigError as err:
        raise ConfigError(f"encoder {encoder!r} on {datamodule.channels}-channel {'x'.join(map(str, shape))} slices of "
                          f"{datamodule.prepared.path}: {err}") from err
