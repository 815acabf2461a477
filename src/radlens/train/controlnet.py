"""``radlens train controlnet``: a mask ControlNet (MONAI ``ControlNet``) on a trained latent diffusion model.

MRGen's third stage, its unpaired source -> target recipe. The LDM's autoencoder, UNet and text
tower (``--ldm``, a ``radlens train ldm`` bundle) are frozen; the ControlNet starts as a copy of the
UNet's encoder and middle block (:func:`radlens.models.controlnet.controlnet_for`) and learns from

- *source* slices (contrast classes ``source``, e.g. T1w), which have masks: condition = the slice's
  label map at image resolution, prompt = the full prompt naming the structures present;
- *target* slices (``target``, e.g. T2w), unlabelled or treated so: condition = an empty mask,
  prompt = without structure names,

so that at inference a target-modality prompt and a source mask give a target-modality image with the
source's layout. Prompts use the LDM's own template and tables (from its bundle). The label map enters
one channel per label (``onehot``) or as grey levels (``grey``, as the reference's PNG masks).

The bundles hold ``vae``, ``unet``, ``text`` and ``controlnet`` (self-contained for sampling), the
LDM's prompt settings (``extra.prompts``) and ``extra.controlnet`` (source, target, labels, LDM bundle,
the UNet's weight digest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from radlens.errors import ConfigError
from radlens.train.config import OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.generative_config import GENERATIVE_OPTIM, GENERATIVE_TRAINER, GenerationDataConfig


def train_controlnet(
    prepared: str,
    out: str,
    ldm: str | None = None,
    source: list[str] = ["T1w"],  # noqa: B006 (jsonargparse shows it as the default)
    target: list[str] | None = ["T2w"],  # noqa: B006
    mask_encoding: Literal["onehot", "grey"] = "onehot",
    conditioning_channels: list[int] | None = None,
    prompt_dropout: float = 0.0,
    data: GenerationDataConfig = GenerationDataConfig(),
    optim: OptimConfig = GENERATIVE_OPTIM,
    trainer: TrainerConfig = GENERATIVE_TRAINER,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a mask ControlNet on a trained LDM with MRGen's unpaired source -> target recipe; returns the run folder.

    Args:
        prepared: the prepared dataset folder (2D slices with masks for the source contrasts and a contrast column).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles).
        ldm: the bundle (or run folder) of ``radlens train ldm``; required.
        source: contrast classes whose slices train with their masks and structure names.
        target: contrast classes whose slices train with an empty mask and no structure names (None or []: none).
        mask_encoding: ``onehot`` (one channel per non-background label) or ``grey`` (label / (labels - 1) in one channel).
        conditioning_channels: channels of the mask embedding, one entry more than the autoencoder's halvings
            (default: MRGen's 16-32-96-256, cut to fit).
        prompt_dropout: probability that a training prompt is replaced by the empty prompt.
        data: batch sizes, loader workers, augmentation (masks move with their images).
        optim: AdamW + warm-up/cosine.
        trainer: devices, precision (bf16 on GPUs), DDP, steps, validation and checkpoint intervals (monitor ``val/loss``).
        seed: seeds weights, batch order, noise and prompt dropout.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.generation import ItemSource
    from radlens.data.generation_prompts import PromptBuilder
    from radlens.errors import InputError
    from radlens.models.components import weights_digest
    from radlens.models.controlnet import controlnet_for
    from radlens.models.generator import GenerativeParts, check_fit, load_generator
    from radlens.train.diffusion_task import ControlNetTask
    from radlens.train.generative import check_vae_fits_data, data_checks, generation_data, image_shape, open_slices
    from radlens.train.run import resolve_resume, run

    validate(optim, trainer, [*data_checks(data), (ldm is not None, "--ldm (the bundle of `radlens train ldm`) is required"),
                              (bool(source), "source: name at least one source contrast class"),
                              (not set(source) & set(target or []), f"source {source} and target {target} overlap"),
                              (0.0 <= prompt_dropout < 1.0, f"prompt_dropout must be in [0, 1), got {prompt_dropout}")])
    assert ldm is not None
    run_dir = Path(out)
    resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = open_slices(prepared)
    generator = load_generator(ldm)
    if generator.controlnet is not None:
        raise InputError(generator.bundle, "is a ControlNet bundle: train a ControlNet on the LDM bundle it came from")
    if generator.prompts is None:
        raise InputError(generator.bundle, "records no prompt template (extra.prompts): train it with `radlens train ldm`")
    check_vae_fits_data(generator.vae, generator.preprocessing, ldm, dataset)
    labels = dataset.labels
    if not [k for k in labels if k > 0]:
        raise InputError(dataset.path, "has no mask labels: a ControlNet learns from the masks of the source slices")
    sources = [ItemSource(tuple(source), "masked")] + ([ItemSource(tuple(target), "empty")] if target else [])
    datamodule = generation_data(dataset, sources, data, seed, PromptBuilder(dataset, generator.prompts), prompt_dropout)
    try:
        controlnet = controlnet_for(generator.unet, generator.vae.downsample_factor, max(labels) + 1, mask_encoding,
                                    conditioning_channels)
    except ConfigError as err:
        raise ConfigError(f"ControlNet for {ldm}: {err}") from err
    check_fit(generator.vae, generator.unet, generator.text, controlnet, image_shape(dataset), f"{ldm} on {dataset.path}")
    parts = GenerativeParts({"vae": generator.vae, "unet": generator.unet, "text": generator.text, "controlnet": controlnet})
    config = {"prepared": prepared, "out": str(out), "ldm": ldm, "source": source, "target": target,
              "mask_encoding": mask_encoding, "conditioning_channels": conditioning_channels, "prompt_dropout": prompt_dropout,
              "data": as_dict(data), "optim": as_dict(optim), "trainer": as_dict(trainer), "seed": seed, "resume": resume}
    counts = [sum(1 for s, _ in datamodule.train_set.items if s == i) for i in range(len(sources))]
    facts = {"prompts": generator.extra.get("prompts", {}), "train_items": {"source": counts[0], "target": sum(counts[1:])},
             "controlnet": {"source": source, "target": target or [], "labels": {str(k): v for k, v in labels.items()},
                            "mask_encoding": mask_encoding, "ldm_bundle": str(Path(generator.bundle or ldm).resolve()),
                            "unet_sha256": weights_digest(generator.unet)}}
    return run(ControlNetTask(parts, optim), datamodule, trainer, run_dir, resume, config, seed, facts).folder
