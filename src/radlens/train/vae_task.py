"""The autoencoder task: reconstruction + KL, PSNR/SSIM on validation slices, the latent scale factor.

Per batch: ``recon, mu, sigma = vae(images)`` (a latent sampled as ``mu + sigma * eps``), loss
``MSE(recon, images) + kl_weight * KL``. Validation reconstructs from ``mu`` (deterministic) and logs
``val/psnr`` (the default monitor), ``val/ssim`` (:mod:`radlens.metrics.image_quality`, the dataset's
declared data range) and ``val/loss``.

The latent ``scale_factor`` (1 / std of the sampled latents of up to ``scale_items`` training slices,
evenly spaced, fixed noise) is re-estimated after every validation and when training ends, so every
checkpoint and both bundles carry the value that fits their own weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from radlens.metrics.image_quality import psnr_ssim
from radlens.models.autoencoder import LatentAutoencoder
from radlens.train.config import OptimConfig
from radlens.train.generative_config import VAELossConfig
from radlens.train.task import Step, TaskModule


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per latent element, averaged over elements and batch (like the per-pixel MSE,
    so that the KL weight means the same at any image size)."""
    mu, sigma = mu.float(), sigma.float()
    return (0.5 * (mu.pow(2) + sigma.pow(2) - 2 * torch.log(sigma.clamp(min=1e-12)) - 1)).mean()


class VAETask(TaskModule):
    """Trains a :class:`LatentAutoencoder` on batches of :class:`radlens.data.modules.GenerationDataModule`.

    ``data_range`` is the span of the stored intensities (for PSNR/SSIM); ``scale_items`` bounds the
    training slices the scale factor is estimated from.
    """

    metrics = ("val/psnr", "val/ssim", "val/loss")
    larger_is_better = frozenset({"val/psnr", "val/ssim"})

    def __init__(self, model: LatentAutoencoder, loss: VAELossConfig | None = None, optim: OptimConfig | None = None,
                 data_range: float = 1.0, scale_items: int = 512, batch_size: int = 8) -> None:
        super().__init__(model, optim)
        self.loss_cfg, self.data_range = loss or VAELossConfig(), float(data_range)
        self.scale_items, self.scale_batch = int(scale_items), int(batch_size)

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        images = batch["image"]
        if stage == "train":
            recon, mu, sigma = self.model(images)
        else:
            mu, sigma = self.model.encode(images)
            recon = self.model.decode(mu)
        mse = F.mse_loss(recon.float(), images.float())
        kl = kl_divergence(mu, sigma)
        loss = mse + self.loss_cfg.kl_weight * kl
        if stage == "train":
            return Step(loss, {"mse": mse.detach(), "kl": kl.detach()})
        psnr, ssim = psnr_ssim(recon, images, self.data_range)
        return Step(loss, keep={"psnr": psnr.cpu(), "ssim": ssim.cpu()})

    def validation_metrics(self, kept: list[dict[str, Any]]) -> dict[str, float]:
        psnr = torch.cat([k["psnr"] for k in kept])
        return {"psnr": float(psnr[torch.isfinite(psnr)].mean()), "ssim": float(torch.cat([k["ssim"] for k in kept]).mean())}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log("val/scale_factor", self.update_scale_factor())

    def on_train_end(self) -> None:
        self.update_scale_factor()

    def update_scale_factor(self) -> float:
        """Re-estimate the latent scale factor from the training slices (see the module docstring)."""
        train = self.trainer.datamodule.train_set
        picks = np.unique(np.linspace(0, len(train) - 1, min(len(train), self.scale_items)).round().astype(int))
        chunks = np.array_split(picks, -(-len(picks) // self.scale_batch))
        batches = (torch.stack([train[int(i)]["image"] for i in chunk]) for chunk in chunks)
        training = self.model.training
        self.model.eval()
        try:
            value = self.model.estimate_scale_factor(batches)
        finally:
            self.model.train(training)
        return value
