"""``radlens train ldm``: a text-conditioned latent diffusion UNet (MONAI ``DiffusionModelUNet``) in a trained
autoencoder's latent space.

MRGen's second stage. The autoencoder (``--vae``, a ``radlens train vae`` bundle) and the text tower
(``--text``: the packaged MiniLM, a BERT-family folder, or a radlens CLIP bundle's text tower) are
frozen; the UNet cross-attends to the per-token states of MRGen-shaped prompts written from the
dataset's metadata and mask labels (:mod:`radlens.data.generation_prompts`). Prompt dropout (0.1)
trains the unconditional branch on the empty prompt for classifier-free guidance. Training uses the
DDPM noise schedule of the UNet config (scaled-linear, 1000 steps); sampling
(:func:`radlens.models.sampling.sample`) uses DDIM, 50 steps, guidance 7 by default.

The UNet config's latent channels, cross-attention width and ``sample_size`` are set from the
autoencoder, the text tower and the slices. The bundles hold ``vae``, ``unet`` and ``text`` with the
prompt template, attribute tables, label names and typical TE/TR/TI per contrast in
``extra.prompts``: :func:`radlens.models.generator.load_generator` needs nothing else to sample.
"""

from __future__ import annotations

from pathlib import Path

from radlens.data.generation_prompts import PromptConfig
from radlens.errors import ConfigError
from radlens.train.config import OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.generative_config import GENERATIVE_OPTIM, GENERATIVE_TRAINER, GenerationDataConfig


def train_ldm(
    prepared: str,
    out: str,
    vae: str | None = None,
    unet: str = "tiny-ldm-unet",
    text: str = "minilm",
    contrasts: list[str] | None = None,
    prompts: PromptConfig = PromptConfig(),
    data: GenerationDataConfig = GenerationDataConfig(),
    optim: OptimConfig = GENERATIVE_OPTIM,
    trainer: TrainerConfig = GENERATIVE_TRAINER,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train a text-conditioned latent diffusion UNet on a prepared 2D dataset; returns the run folder.

    Args:
        prepared: the prepared dataset folder (2D slices of one shape, with a contrast column for the default prompts).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles).
        vae: the autoencoder: the bundle (or run folder) of ``radlens train vae``, or an LDM/ControlNet bundle whose
            autoencoder to reuse; required.
        unet: registry name or JSON file of a ``diffusion_unet`` config (``tiny-ldm-unet``, ``mrgen-unet``).
        text: the frozen text tower: ``minilm`` (packaged), a BERT-family model folder, or a radlens CLIP
            (or text tower) bundle.
        contrasts: train on the slices of these contrast classes only (default: every slice).
        prompts: the prompt template, the attributes table file and the prompt dropout.
        data: batch sizes, loader workers, augmentation.
        optim: AdamW + warm-up/cosine.
        trainer: devices, precision (bf16 on GPUs), DDP, steps, validation and checkpoint intervals (monitor ``val/loss``).
        seed: seeds weights, batch order, noise and prompt dropout.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.data.generation import ItemSource
    from radlens.data.generation_prompts import PromptBuilder, PromptTemplate
    from radlens.models.generator import GenerativeParts
    from radlens.models.registry import build_model
    from radlens.train.diffusion_task import LatentDiffusionTask
    from radlens.train.generative import (
        check_vae_fits_data,
        component_spec,
        data_checks,
        generation_data,
        image_shape,
        load_autoencoder,
        open_slices,
        text_tower,
    )
    from radlens.train.run import resolve_resume, run

    validate(optim, trainer, [*data_checks(data), (vae is not None, "--vae (the bundle of `radlens train vae`) is required"),
                              (0.0 <= prompts.dropout < 1.0, f"prompts.dropout must be in [0, 1), got {prompts.dropout}")])
    assert vae is not None
    run_dir = Path(out)
    resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = open_slices(prepared)
    template = PromptTemplate.from_config(prompts)
    builder = PromptBuilder(dataset, template)
    autoencoder, vae_preprocessing = load_autoencoder(vae)
    check_vae_fits_data(autoencoder, vae_preprocessing, vae, dataset)
    sources = [ItemSource(tuple(contrasts) if contrasts else None)]
    datamodule = generation_data(dataset, sources, data, seed, builder, prompts.dropout)
    tower = text_tower(text)
    latent = autoencoder.latent_shape(image_shape(dataset))
    spec = component_spec(unet, "diffusion_unet", in_channels=latent[0], out_channels=latent[0], with_conditioning=True,
                          cross_attention_dim=tower.width, sample_size=list(latent[1:]))
    try:
        network = build_model(spec)
    except ConfigError as err:
        raise ConfigError(f"unet {unet!r} on {latent[0]}x{'x'.join(map(str, latent[1:]))} latents of {vae}: {err}") from err
    network.check_latents(latent[0], latent[1:], f"unet {unet!r} with the autoencoder {vae}")
    parts = GenerativeParts({"vae": autoencoder, "unet": network, "text": tower})
    config = {"prepared": prepared, "out": str(out), "vae": vae, "unet": unet, "text": text, "contrasts": contrasts,
              "prompts": as_dict(prompts), "data": as_dict(data), "optim": as_dict(optim), "trainer": as_dict(trainer),
              "seed": seed, "resume": resume}
    train = datamodule.train_set
    examples = sorted({builder.prompt(sid) for sid in train.series_ids})[:5]  # one per series, without structures
    facts = {"vae_bundle": str(Path(vae).resolve()), "train_items": len(train), "example_prompts": examples,
             "prompts": {**template.to_dict(), "labels": dataset.card.get("labels", {}),
                         "contrast_fields": builder.typical_fields(train.series_ids)}}
    return run(LatentDiffusionTask(parts, optim), datamodule, trainer, run_dir, resume, config, seed, facts).folder
