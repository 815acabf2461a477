"""The mask ControlNet: MONAI's ``ControlNet`` built to match a ``diffusion_unet``, conditioned on a label map.

Component ``mask_controlnet``: the UNet's architecture arguments (the encoder half and middle block
are a trainable copy of the UNet's), plus how the mask enters. The condition is the label map at
*image* resolution, encoded as one channel per non-background label (``onehot``) or as one grey
channel ``label / (num_labels - 1)`` (``grey``, the PNG masks of the reference), and embedded down
to the latent size *inside* the network by its conditioning embedding: a stride-2 convolution per
halving (MRGen's 16-32-96-256 channels for the /8 autoencoder). MONAI's latent ControlNet inferer
would interpolate the mask down to latent size instead, losing thin structures.

:func:`controlnet_for` builds one to match a UNet and an autoencoder and copies the UNet's weights
into it (``monai.networks.utils.copy_model_state``), as the ControlNet paper initialises it; the
zero-initialised output convolutions make the untrained ControlNet leave the UNet's output unchanged.
A label of -1 (unknown, an item without a mask) counts as background, like an empty mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import ControlNet

from radlens.errors import ConfigError
from radlens.models.components import component

ENCODINGS = ("onehot", "grey")
REFERENCE_EMBEDDING = (16, 32, 96, 256)  # MRGen's (and the ControlNet paper's) conditioning embedding
# The arguments a ControlNet shares with the UNet it steers (its copy of the UNet's encoder must fit).
SHARED = ("spatial_dims", "in_channels", "channels", "num_res_blocks", "attention_levels", "norm_num_groups", "norm_eps",
          "resblock_updown", "num_head_channels", "with_conditioning", "transformer_num_layers", "cross_attention_dim",
          "upcast_attention", "use_flash_attention")


@component("mask_controlnet", family="generative")
class MaskControlNet(ControlNet):
    """MONAI ``ControlNet`` steering a ``diffusion_unet`` from a label map (see the module docstring).

    ``num_labels``: label ids ``0..num_labels-1`` (0 = background); ``conditioning_channels``: the
    embedding's channels, one entry more than the halvings from image to latent size.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        channels: Sequence[int] = (32, 64, 64, 64),
        num_res_blocks: int | Sequence[int] = 2,
        attention_levels: Sequence[bool] = (False, False, True, True),
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        resblock_updown: bool = False,
        num_head_channels: int | Sequence[int] = 8,
        with_conditioning: bool = True,
        transformer_num_layers: int = 1,
        cross_attention_dim: int | None = 384,
        upcast_attention: bool = False,
        use_flash_attention: bool = False,
        num_labels: int = 2,
        mask_encoding: str = "onehot",
        conditioning_channels: Sequence[int] = REFERENCE_EMBEDDING,
    ) -> None:
        if mask_encoding not in ENCODINGS:
            raise ConfigError(f"mask_controlnet: mask_encoding must be one of {', '.join(ENCODINGS)}, got {mask_encoding!r}")
        if num_labels < 2 or not conditioning_channels or min(conditioning_channels) < 1:
            raise ConfigError(f"mask_controlnet: num_labels must be >= 2 (background and one label) and conditioning_channels "
                              f"positive, got {num_labels}, {list(conditioning_channels)}")
        try:
            super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, num_res_blocks=num_res_blocks,
                             channels=channels, attention_levels=attention_levels, norm_num_groups=norm_num_groups,
                             norm_eps=norm_eps, resblock_updown=resblock_updown, num_head_channels=num_head_channels,
                             with_conditioning=with_conditioning, transformer_num_layers=transformer_num_layers,
                             cross_attention_dim=cross_attention_dim if with_conditioning else None,
                             upcast_attention=upcast_attention,
                             conditioning_embedding_in_channels=num_labels - 1 if mask_encoding == "onehot" else 1,
                             conditioning_embedding_num_channels=conditioning_channels,
                             use_flash_attention=use_flash_attention)
        except ValueError as err:  # MONAI's own checks
            raise ConfigError(f"mask_controlnet: {err}") from err
        self.num_labels, self.mask_encoding = num_labels, mask_encoding
        self.mask_downsample_factor = 2 ** (len(conditioning_channels) - 1)

    @staticmethod
    def describe(config: dict) -> str:
        """One line for ``radlens models``."""
        return (f"ControlNet {'-'.join(map(str, config.get('channels', [])))}, {config.get('num_labels')} labels "
                f"({config.get('mask_encoding')}), mask embedding {'-'.join(map(str, config.get('conditioning_channels', [])))}")

    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The condition image of label maps ``(B, 1, *spatial)`` (int ids; -1 = unknown = background):
        ``(B, num_labels - 1, *spatial)`` one-hot without background, or ``(B, 1, *spatial)`` grey levels."""
        labels = mask.long().clamp(min=0)
        if labels.numel() and int(labels.max()) >= self.num_labels:
            raise ConfigError(f"mask label {int(labels.max())} is outside this ControlNet's {self.num_labels} labels "
                              f"(0..{self.num_labels - 1})")
        if self.mask_encoding == "grey":
            return labels.float() / (self.num_labels - 1)
        onehot = F.one_hot(labels[:, 0], self.num_labels)[..., 1:]
        return onehot.movedim(-1, 1).float()

    def mismatch(self, unet: Any) -> list[str]:
        """The architecture arguments in which this ControlNet differs from ``unet`` (empty: it fits)."""
        ours, theirs = self.config, unet.config
        return [f"{key} {ours.get(key)!r} vs the UNet's {theirs.get(key)!r}" for key in SHARED if ours.get(key) != theirs.get(key)]


def embedding_channels(downsample_factor: int, reference: Sequence[int] = REFERENCE_EMBEDDING) -> list[int]:
    """Conditioning-embedding channels for a mask ``downsample_factor`` times the latent size: the
    reference's first ``log2(factor) + 1`` entries (doubling the last one beyond them)."""
    levels = int(round(math.log2(downsample_factor))) + 1
    if downsample_factor < 1 or 2 ** (levels - 1) != downsample_factor:
        raise ConfigError(f"the autoencoder's downsample factor must be a power of 2, got {downsample_factor}")
    out = list(reference[:levels])
    while len(out) < levels:
        out.append(out[-1] * 2)
    return out


def controlnet_for(unet: Any, downsample_factor: int, num_labels: int, mask_encoding: str = "onehot",
                   conditioning_channels: Sequence[int] | None = None) -> MaskControlNet:
    """A ``mask_controlnet`` matching ``unet`` (a ``diffusion_unet``) for masks ``downsample_factor`` times
    its latent size, initialised from the UNet's weights (every parameter the two share by name)."""
    from monai.networks.utils import copy_model_state

    shared = {key: unet.config[key] for key in SHARED}
    channels = list(conditioning_channels) if conditioning_channels else embedding_channels(downsample_factor)
    if 2 ** (len(channels) - 1) != downsample_factor:
        raise ConfigError(f"conditioning_channels {channels} halve the mask {len(channels) - 1} times, but the autoencoder "
                          f"down-samples by {downsample_factor}: give log2({downsample_factor}) + 1 entries")
    net = MaskControlNet(**shared, num_labels=num_labels, mask_encoding=mask_encoding, conditioning_channels=channels)
    # MONAI logs every copy at INFO through its own handler ("'dst' model updated: ..."): not for the console.
    monai_log = logging.getLogger("monai.networks.utils")
    level = monai_log.level
    monai_log.setLevel(logging.WARNING)
    try:
        _, copied, _ = copy_model_state(net, unet, inplace=True)
    finally:
        monai_log.setLevel(level)
    if not copied:
        raise ConfigError("no UNet weight fits the ControlNet: the two architectures differ")
    return net
