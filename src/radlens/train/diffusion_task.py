"""The latent diffusion tasks: text-to-image UNet (``train ldm``) and mask ControlNet (``train controlnet``).

Both train on a :class:`radlens.models.generator.GenerativeParts` (``vae``, ``unet``, ``text`` and, for
the ControlNet, ``controlnet``) of which only one part learns; the others are frozen and kept in eval
mode. Per batch: scaled latents of the images (``vae.encode_latents``, sampled), noise and timesteps
``t ~ U{0..T-1}`` drawn, the latents noised by MONAI's ``DDPMScheduler`` of the UNet's schedule, and
the loss is the MSE between the network's prediction and its target (the noise, or the velocity for
``v_prediction``) in float32. Text conditioning: the per-token states of the frozen text tower,
padded to its context length (:func:`radlens.models.sampling.prompt_states`); prompt dropout happened
in the data (an empty prompt), so the unconditional branch is the empty prompt's states.

Validation draws its latent noise, noise and timesteps from generators seeded by the batch (the same
at every validation, and the global RNG, which resumes exactly, is left alone): ``val/loss`` is
comparable from one validation to the next.

MONAI's ``LatentDiffusionInferer`` is not used for the training step: its scheduler would cast the
noise schedule to the latents' dtype (bf16 under mixed precision) for the rest of the run, and the
ControlNet variant interpolates the mask to latent size instead of embedding it (see
:mod:`radlens.models.controlnet`). Checkpoints leave out the frozen parts (an LDM UNet is 3.4 GB at
the reference's size) and record their digests: a resumed run refills them from the bundles it was
started with, and refuses, naming the part, bundles whose weights changed meanwhile.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from radlens.models.generator import GenerativeParts
from radlens.models.sampling import prompt_states
from radlens.train.config import OptimConfig
from radlens.train.task import Step, TaskModule


class DiffusionTask(TaskModule):
    """Base of the latent diffusion tasks: ``trainable`` is the part that learns, the rest is frozen."""

    trainable: ClassVar[str]

    def __init__(self, parts: GenerativeParts, optim: OptimConfig | None = None) -> None:
        super().__init__(parts, optim)
        self.frozen = [name for name in parts if name != self.trainable]
        for name in self.frozen:
            parts[name].requires_grad_(False).eval()
        parts[self.trainable].requires_grad_(True)
        self.scheduler = parts["unet"].train_scheduler()

    def train(self, mode: bool = True) -> DiffusionTask:
        super().train(mode)
        for name in self.frozen:
            self.model[name].eval()
        return self

    def fixed_parts(self) -> list[str]:
        return self.frozen

    @abc.abstractmethod
    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The network's prediction for noised latents (the UNet alone, or steered by the ControlNet)."""

    def step(self, batch: dict[str, Any], stage: str) -> Step:
        images = batch["image"]
        generator = None if stage == "train" else torch.Generator().manual_seed(int(batch["index"][0]) * 7919 + 17)
        with torch.no_grad():
            context = prompt_states(self.model["text"], batch["prompt"], images.device)
            latents = self.model["vae"].encode_latents(images, sample=True, generator=generator)
        n = len(latents)
        steps = self.scheduler.num_train_timesteps
        if generator is None:
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, steps, (n,), device=latents.device)
        else:
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            timesteps = torch.randint(0, steps, (n,), generator=generator).to(latents.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = noise if self.scheduler.prediction_type == "epsilon" else self.scheduler.get_velocity(latents, noise, timesteps)
        prediction = self.predict(noisy, timesteps, context.to(noisy.dtype), batch)
        return Step(F.mse_loss(prediction.float(), target))


class LatentDiffusionTask(DiffusionTask):
    """Trains the text-conditioned UNet of ``parts`` (``vae``, ``unet``, ``text``); monitor ``val/loss``."""

    trainable = "unet"

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return self.model["unet"](x=noisy, timesteps=timesteps, context=context)


class ControlNetTask(DiffusionTask):
    """Trains the mask ControlNet of ``parts`` (``vae``, ``unet``, ``text``, ``controlnet``) on the batches' label
    maps at image resolution; the UNet is frozen; monitor ``val/loss``."""

    trainable = "controlnet"

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        controlnet = self.model["controlnet"]
        condition = controlnet.encode_mask(batch["mask"]).to(noisy.dtype)
        down, mid = controlnet(x=noisy, timesteps=timesteps, controlnet_cond=condition, context=context)
        return self.model["unet"](x=noisy, timesteps=timesteps, context=context, down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid)
