"""The latent autoencoder of the generative pipeline: MONAI's ``AutoencoderKL`` with its latent scale.

Component ``autoencoder_kl``: the config is MONAI's constructor (channels, residual blocks, attention
levels, latent channels, ...). The network compresses an image ``(B, in_channels, H, W)`` by
``downsample_factor`` = ``2 ** (len(channels) - 1)`` per side into ``latent_channels`` channels.

A latent diffusion model wants latents of roughly unit variance. Stable Diffusion (and MRGen, which
kept its constant) multiply by a fixed 0.18215; here ``scale_factor`` is a registered buffer
*estimated from training latents* as ``1 / std`` (:meth:`LatentAutoencoder.estimate_scale_factor`,
called by ``radlens train vae``) and saved with the weights, so every later stage scales the same way.
``encode_latents`` and ``decode_latents`` apply and undo it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from monai.networks.nets import AutoencoderKL

from radlens.errors import ConfigError
from radlens.models.components import component


@component("autoencoder_kl", family="generative")
class LatentAutoencoder(AutoencoderKL):
    """MONAI ``AutoencoderKL`` + the latent ``scale_factor`` buffer (1.0 until estimated).

    Arguments are MONAI's (``spatial_dims`` 2 for slices); they are checked here so that a bad config
    is a ConfigError before any weights are made.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64, 64),
        num_res_blocks: int | Sequence[int] = 2,
        attention_levels: Sequence[bool] = (False, False, False, False),
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        with_encoder_nonlocal_attn: bool = True,
        with_decoder_nonlocal_attn: bool = True,
        use_checkpoint: bool = False,
        use_flash_attention: bool = False,
    ) -> None:
        if spatial_dims not in (2, 3) or min(in_channels, out_channels, latent_channels) < 1 or not channels:
            raise ConfigError(f"autoencoder_kl: spatial_dims must be 2 or 3 and the channel counts >= 1, got spatial_dims="
                              f"{spatial_dims}, in/out/latent channels {in_channels}/{out_channels}/{latent_channels}, "
                              f"channels {list(channels)}")
        try:
            super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                             num_res_blocks=num_res_blocks, channels=channels, attention_levels=attention_levels,
                             latent_channels=latent_channels, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
                             with_encoder_nonlocal_attn=with_encoder_nonlocal_attn,
                             with_decoder_nonlocal_attn=with_decoder_nonlocal_attn, use_checkpoint=use_checkpoint,
                             use_flash_attention=use_flash_attention)
        except ValueError as err:  # MONAI's own checks (channels vs groups, lengths)
            raise ConfigError(f"autoencoder_kl: {err}") from err
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    @staticmethod
    def describe(config: dict) -> str:
        """One line for ``radlens models``."""
        return (f"AutoencoderKL {'-'.join(map(str, config.get('channels', [])))}, "
                f"{config.get('latent_channels')} latent channels, /{2 ** (len(config.get('channels', [1])) - 1)}")

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """``(latent_channels, *spatial)`` of the latents of an image of spatial shape ``image_shape``;
        ConfigError when a side is not divisible by ``downsample_factor``."""
        spatial = [int(s) for s in image_shape]
        if len(spatial) != self.spatial_dims or any(s % self.downsample_factor for s in spatial):
            raise ConfigError(f"image shape {spatial} does not fit this autoencoder: it needs {self.spatial_dims} sides "
                              f"divisible by its downsample factor {self.downsample_factor}")
        return (self.latent_channels, *(s // self.downsample_factor for s in spatial))

    def encode_latents(self, images: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of ``images``: ``(mu + sigma * eps) * scale_factor`` (``sample``), or ``mu * scale_factor``.

        ``eps`` is drawn on the CPU from ``generator`` (reproducible on any device), or from the global
        RNG without one. Returned in float32 whatever the autocast dtype, for the scheduler's arithmetic.
        """
        mu, sigma = self.encode(images)
        mu, sigma = mu.float(), sigma.float()
        if sample:
            eps = (torch.randn(mu.shape, generator=generator).to(mu.device) if generator is not None
                   else torch.randn_like(mu))
            mu = mu + sigma * eps
        return mu * self.scale_factor.float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents (``latents / scale_factor`` decoded)."""
        return self.decode(latents / self.scale_factor.to(latents.dtype))

    @torch.no_grad()
    def estimate_scale_factor(self, batches: Iterable[torch.Tensor], seed: int = 0) -> float:
        """Set ``scale_factor`` to ``1 / std`` of the sampled latents of ``batches`` (images on this
        module's device or any: they are moved), with noise from ``seed``; returns it."""
        device = self.scale_factor.device
        generator = torch.Generator().manual_seed(seed)
        total = squares = count = 0.0
        for images in batches:
            mu, sigma = self.encode(images.to(device))
            z = mu.double() + sigma.double() * torch.randn(mu.shape, generator=generator, dtype=torch.float64).to(device)
            total, squares, count = total + float(z.sum()), squares + float((z * z).sum()), count + z.numel()
        if count < 2:
            raise ConfigError("estimating the latent scale factor needs at least one image")
        mean = total / count
        std = max((squares / count - mean * mean) * count / (count - 1), 0.0) ** 0.5
        if not std > 0:
            raise ConfigError("the latents have zero spread: the latent scale factor cannot be estimated")
        self.scale_factor.fill_(1.0 / std)
        return 1.0 / std
