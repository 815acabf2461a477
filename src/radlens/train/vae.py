"""``radlens train vae``: the latent autoencoder (MONAI ``AutoencoderKL``) on the slices of a prepared dataset.

MRGen's first stage: compress 1-channel slices of any size (sides divisible by the down-sampling)
into latents for the diffusion model. Loss: MSE + KL (weight 1e-4 by default). Perceptual and
adversarial terms are not offered: MONAI's ``PerceptualLoss`` needs pretrained networks that radlens
cannot download at run time, and a patch discriminator needs a second optimiser loop the shared
engine does not run.

Besides the run folder of :func:`radlens.train.run.run` (``best/`` chosen by ``val/psnr``), the
command writes ``OUT/metrics.json``: PSNR and SSIM of the ``best/`` autoencoder's reconstructions
(from the latent mean) of the held-out patients of ``eval_split``, per slice averaged, with 95%
patient-bootstrap intervals, the data range they were computed with and the latent scale factor.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError
from radlens.train.config import OptimConfig, TrainerConfig, as_dict, validate
from radlens.train.generative_config import GENERATIVE_OPTIM, GENERATIVE_TRAINER, GenerationDataConfig, VAELossConfig

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset
    from radlens.models.autoencoder import LatentAutoencoder


def train_vae(
    prepared: str,
    out: str,
    model: str = "tiny-vae2d",
    contrasts: list[str] | None = None,
    data: GenerationDataConfig = GenerationDataConfig(),
    loss: VAELossConfig = VAELossConfig(),
    optim: OptimConfig = GENERATIVE_OPTIM,
    trainer: TrainerConfig = GENERATIVE_TRAINER,
    eval_split: str = "test",
    scale_items: int = 512,
    n_bootstrap: int = 1000,
    seed: int = 0,
    resume: str | None = None,
) -> Path:
    """Train the latent autoencoder on a prepared 2D dataset and evaluate it on held-out patients; returns the run folder.

    Args:
        prepared: the prepared dataset folder (2D slices of one shape).
        out: the run folder (config, logs, checkpoints, ``best/`` and ``last/`` bundles, metrics.json).
        model: registry name or JSON file of an ``autoencoder_kl`` config (``tiny-vae2d``, ``mrgen-vae``);
            its in/out channels are set to the slices' one channel.
        contrasts: train on the slices of these contrast classes only (default: every slice).
        data: batch sizes, loader workers, augmentation.
        loss: the KL weight of MSE + KL.
        optim: AdamW + warm-up/cosine.
        trainer: devices, precision (bf16 on GPUs), DDP, steps, validation and checkpoint intervals (monitor ``val/psnr``).
        eval_split: the split of the held-out patients the final PSNR/SSIM are measured on.
        scale_items: training slices the latent scale factor (1 / std of the latents) is estimated from.
        n_bootstrap: patient-bootstrap resamples for the 95% intervals of metrics.json.
        seed: seeds weights, batch order and the latent noise.
        resume: ``latest`` (``OUT/checkpoints/last.ckpt``) or a checkpoint path to continue from.
    """
    import lightning.pytorch as pl

    from radlens.common.atomic import write_json_atomic
    from radlens.data.generation import ItemSource
    from radlens.data.modules import has_split
    from radlens.models.bundle import load_model
    from radlens.models.registry import build_model
    from radlens.train.generative import component_spec, data_checks, generation_data, image_shape, open_slices
    from radlens.train.run import resolve_resume, run
    from radlens.train.vae_task import VAETask

    validate(optim, trainer, [*data_checks(data), (loss.kl_weight >= 0, f"loss.kl_weight must be >= 0, got {loss.kl_weight}"),
                              (scale_items >= 1, f"scale_items must be >= 1, got {scale_items}"),
                              (n_bootstrap >= 0, f"n_bootstrap must be >= 0, got {n_bootstrap}")])
    run_dir = Path(out)
    resolve_resume(run_dir, resume)
    pl.seed_everything(seed, workers=True, verbose=False)
    dataset = open_slices(prepared)
    if not has_split(dataset, eval_split):
        raise ConfigError(f"{dataset.path} has no slices in eval_split {eval_split!r} (the held-out patients): choose another split")
    sources = [ItemSource(tuple(contrasts) if contrasts else None)]
    datamodule = generation_data(dataset, sources, data, seed)
    vae = build_model(component_spec(model, "autoencoder_kl", in_channels=1, out_channels=1))
    try:
        vae.latent_shape(image_shape(dataset))
    except ConfigError as err:
        raise ConfigError(f"model {model!r} on the {list(image_shape(dataset))} slices of {dataset.path}: {err}") from err
    low, high = dataset.value_range
    config = {"prepared": prepared, "out": str(out), "model": model, "contrasts": contrasts, "data": as_dict(data),
              "loss": as_dict(loss), "optim": as_dict(optim), "trainer": as_dict(trainer), "eval_split": eval_split,
              "scale_items": scale_items, "n_bootstrap": n_bootstrap, "seed": seed, "resume": resume}
    facts = {"train_items": len(datamodule.train_set), "data_range": high - low}
    task = VAETask(vae, loss, optim, data_range=high - low, scale_items=scale_items, batch_size=datamodule.eval_batch_size)
    result = run(task, datamodule, trainer, run_dir, resume, config, seed, facts)
    if result.is_global_zero:
        best = load_model(run_dir / "best", kind="autoencoder_kl")
        metrics = evaluate_reconstruction(best, dataset, eval_split, replace(data, augment=replace(data.augment, enabled=False)),
                                          n_bootstrap, seed)
        write_json_atomic(run_dir / "metrics.json", {**metrics, "checkpoint": result.best, "global_step": result.global_step})
    return run_dir


def evaluate_reconstruction(vae: LatentAutoencoder, prepared: PreparedDataset, split: str, data: GenerationDataConfig,
                            n_bootstrap: int = 1000, seed: int = 0, device: str | None = None) -> dict[str, Any]:
    """PSNR/SSIM of ``vae``'s reconstructions (decoded latent means) of every slice of ``split``: means over
    slices, per-patient means averaged, and 95% intervals resampling patients."""
    import torch
    from torch.utils.data import DataLoader, default_collate

    from radlens.data.generation import GenerationDataset
    from radlens.metrics.findings import patient_resamples, percentile_ci
    from radlens.metrics.image_quality import SSIM_SIGMA, SSIM_WINDOW, psnr_ssim

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae = vae.to(dev).eval()
    items = GenerationDataset(prepared, split)
    low, high = prepared.value_range
    psnr, ssim = [], []
    with torch.no_grad():
        for batch in DataLoader(items, batch_size=data.eval_batch_size or data.batch_size, collate_fn=default_collate,
                                num_workers=data.num_workers):
            images = batch["image"].to(dev)
            p, s = psnr_ssim(vae.decode(vae.encode(images)[0]), images, high - low)
            psnr.append(p.cpu())
            ssim.append(s.cpu())
    values = {"psnr": torch.cat(psnr).numpy(), "ssim": torch.cat(ssim).numpy()}
    patients = np.asarray(items.patient_ids)
    out: dict[str, Any] = {"split": split, "n_slices": int(len(patients)), "n_patients": int(len(set(patients))),
                           "data_range": high - low, "ssim_window": SSIM_WINDOW, "ssim_sigma": SSIM_SIGMA,
                           "scale_factor": float(vae.scale_factor), "n_bootstrap": n_bootstrap}
    for name, per_slice in values.items():
        finite = np.isfinite(per_slice)
        resampled = [float(per_slice[idx][finite[idx]].mean()) for idx in patient_resamples(patients, n_bootstrap, seed)]
        by_patient = [float(per_slice[(patients == p) & finite].mean()) for p in sorted(set(patients))]
        out[name] = {"mean": float(per_slice[finite].mean()), "patient_mean": float(np.mean(by_patient)),
                     "ci95": percentile_ci(np.asarray(resampled), 0.95), "n_infinite": int((~finite).sum())}
    return out
