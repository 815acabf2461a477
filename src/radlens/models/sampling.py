"""Text (and mask) to image: prompt states for cross-attention, and DDIM sampling with classifier-free guidance.

:func:`encode_prompts` turns prompts into per-token states of a frozen text tower, padded with zeros
to the tower's context length (so a prompt's states do not depend on the others in its batch, as
Stable Diffusion pads to 77 tokens), together with the empty prompt's states: the unconditional
branch of classifier-free guidance, as in MRGen (MONAI's inferers fill it with -1 instead).

:func:`sample` runs DDIM (the UNet's own noise schedule, ``steps`` steps, eta 0) from seeded noise,
with guidance ``uncond + guidance * (cond - uncond)``, and, with a ControlNet, the label map at image
resolution as the condition of both branches (the ControlNet embeds it down itself; MONAI's latent
ControlNet inferer would interpolate it down instead, so the networks are called directly here).
Each item's starting noise comes from its own seed, drawn on the CPU: an item is reproduced by its
seed whatever the batch it is in and whatever the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from radlens.errors import ConfigError

if TYPE_CHECKING:
    from radlens.models.autoencoder import LatentAutoencoder
    from radlens.models.controlnet import MaskControlNet
    from radlens.models.diffusion import DiffusionUNet
    from radlens.models.text import TextEncoder


@dataclass
class Conditioning:
    """Per-token states of ``B`` prompts ``(B, L, width)`` and of the empty prompt ``(1, L, width)``."""

    states: torch.Tensor
    null: torch.Tensor

    def __len__(self) -> int:
        return len(self.states)

    def to(self, device: torch.device | str) -> Conditioning:
        return Conditioning(self.states.to(device), self.null.to(device))


def prompt_states(text: TextEncoder, prompts: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
    """``(B, context_length, width)`` per-token states of ``prompts`` (zeros past each prompt's tokens)."""
    batch = text.tokenize(list(prompts))
    device = device if device is not None else next(text.parameters()).device
    states, _ = text.encode_tokens(batch["input_ids"].to(device), batch["attention_mask"].to(device))
    return F.pad(states, (0, 0, 0, text.context_length - states.shape[1]))


def encode_prompts(text: TextEncoder, prompts: Sequence[str], device: torch.device | str | None = None) -> Conditioning:
    """The :class:`Conditioning` of ``prompts``: their states and the empty prompt's."""
    with torch.no_grad():
        return Conditioning(prompt_states(text, prompts, device), prompt_states(text, [""], device))


def item_noise(shape: Sequence[int], seeds: Sequence[int]) -> torch.Tensor:
    """Standard normal noise ``(len(seeds), *shape)``, item ``i`` drawn on the CPU from ``seeds[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample(
    vae: LatentAutoencoder,
    unet: DiffusionUNet,
    controlnet: MaskControlNet | None,
    text_states: Conditioning,
    mask: torch.Tensor | None = None,
    seed: int | Sequence[int] = 0,
    steps: int = 50,
    guidance: float = 7.0,
    image_shape: Sequence[int] | None = None,
    conditioning_scale: float = 1.0,
) -> torch.Tensor:
    """Generate ``len(text_states)`` images ``(B, out_channels, H, W)`` (float32, on the UNet's device).

    ``mask``: label maps ``(B, 1, H, W)`` (int ids) for the ControlNet; without one a ControlNet gets
    the empty mask. ``seed``: one seed per item, or an int ``s`` meaning ``s, s + 1, ...``. The image
    size is the mask's, else ``image_shape``, else the UNet's training ``sample_size`` times the
    autoencoder's down-sampling. ``guidance`` 1 runs the conditional branch only.
    """
    n = len(text_states)
    device = next(unet.parameters()).device
    if mask is not None:
        if controlnet is None:
            raise ConfigError("a mask conditions the image only through a ControlNet: give one, or no mask")
        if mask.ndim != 2 + vae.spatial_dims or mask.shape[0] != n or mask.shape[1] != 1:
            raise ConfigError(f"mask must be (B={n}, 1, *spatial) label maps, got {tuple(mask.shape)}")
        image_shape = tuple(mask.shape[2:])
    elif image_shape is None:
        if unet.sample_size is None:
            raise ConfigError("the UNet records no training sample_size: give image_shape")
        image_shape = tuple(s * vae.downsample_factor for s in unet.sample_size)
    latent_shape = vae.latent_shape(image_shape)
    unet.check_latents(latent_shape[0], latent_shape[1:], "sample")
    seeds = [seed + i for i in range(n)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ConfigError(f"{len(seeds)} seeds for {n} prompts")
    latents = item_noise(latent_shape, seeds).to(device)
    guided = guidance != 1.0
    cond = text_states.states.to(device)
    context = torch.cat([text_states.null.to(device).expand(n, -1, -1), cond]) if guided else cond
    control = None
    if controlnet is not None:
        if controlnet.mask_downsample_factor != vae.downsample_factor:
            raise ConfigError(f"the ControlNet embeds masks down {controlnet.mask_downsample_factor}x, the autoencoder "
                              f"{vae.downsample_factor}x")
        labels = mask if mask is not None else torch.zeros((n, 1, *image_shape), dtype=torch.long)
        control = controlnet.encode_mask(labels.to(device))
        control = torch.cat([control, control]) if guided else control
    scheduler = unet.sampling_scheduler(steps)
    for t in scheduler.timesteps:
        x = torch.cat([latents, latents]) if guided else latents
        timesteps = torch.full((len(x),), int(t), device=device, dtype=torch.long)
        residuals = {}
        if controlnet is not None:
            down, mid = controlnet(x=x, timesteps=timesteps, controlnet_cond=control, conditioning_scale=conditioning_scale,
                                   context=context)
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        out = unet(x=x, timesteps=timesteps, context=context, **residuals).float()
        if guided:
            uncond, conditioned = out.chunk(2)
            out = uncond + guidance * (conditioned - uncond)
        latents, _ = scheduler.step(out, int(t), latents)
    return vae.decode_latents(latents).float()
