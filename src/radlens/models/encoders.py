"""More image encoders for the registry: MONAI's Swin transformer and a gated CNN (MambaOut style).

Like :mod:`radlens.models.image`, both take ``(B, C, *spatial)`` (2D or 3D, ``C = in_channels``,
one by default) and return one feature vector per image, ``(B, width)``, with ``.width``,
``.input_shape``, ``.in_channels`` and a ``gradient_checkpointing`` switch (per stage).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.models.components import component
from radlens.models.image import _check_shape, _run, check_image_shape


@component("swin", family="image encoder")
class SwinEncoder(nn.Module):
    """MONAI's Swin transformer (``monai.networks.nets.swin_unetr.SwinTransformer``, the SwinUNETR
    encoder), its last stage layer-normalised and average-pooled over space.

    MONAI's Swin always has four stages, each ending in a patch merging, so the features are
    ``embed_dim * 16`` wide and the input is downsampled by ``patch_size * 16``: every side of
    ``input_shape`` must be a multiple of that (32 with the default 2x2 patches). ``num_heads[i]``
    must divide ``embed_dim * 2**i``. ``use_v2`` adds SwinUNETR-v2's residual convolution blocks.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        in_channels: int = 1,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        use_v2: bool = False,
    ) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        _check_shape(input_shape)
        dims = len(input_shape)
        if len(depths) != 4 or len(num_heads) != 4:
            raise ConfigError(f"swin depths and num_heads need 4 entries (MONAI's Swin has 4 stages), got {list(depths)}, {list(num_heads)}")
        if any((embed_dim * 2**i) % h for i, h in enumerate(num_heads)):
            raise ConfigError(f"swin num_heads {list(num_heads)} must divide the stage widths {[embed_dim * 2**i for i in range(4)]}")
        step = patch_size * 16
        if patch_size < 1 or any(s % step for s in input_shape):
            raise ConfigError(f"swin input_shape {list(input_shape)} must be a multiple of patch_size * 16 = {step} on every axis")
        self.input_shape, self.in_channels = tuple(input_shape), in_channels
        self.width = embed_dim * 16
        self.use_v2 = use_v2
        # MONAI calls .item() on a tensor while building, which the meta device (parameter counts) refuses.
        meta = torch.get_default_device().type == "meta"
        with torch.device("cpu") if meta else contextlib.nullcontext():
            net = SwinTransformer(
                in_chans=in_channels, embed_dim=embed_dim, window_size=(window_size,) * dims, patch_size=(patch_size,) * dims,
                depths=tuple(depths), num_heads=tuple(num_heads), mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
                spatial_dims=dims, use_v2=use_v2,
            )
        self.net = net.to("meta") if meta else net
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_shape(x, self.in_channels, self.input_shape)
        net, ckpt = self.net, self.gradient_checkpointing and self.training
        # MONAI's forward returns every stage's output; only the last is needed, and each stage is checkpointable.
        h = net.pos_drop(net.patch_embed(x))
        for i in range(1, 5):
            if self.use_v2:
                h = getattr(net, f"layers{i}c")[0](h.contiguous())
            h = _run(getattr(net, f"layers{i}")[0], h.contiguous(), ckpt)
        h = net.proj_out(h, normalize=True)  # layer norm over the channels (no affine), as SwinUNETR
        return h.flatten(2).mean(dim=2)


class _ChannelsLastNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a channels-first tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class GatedCNNBlock(nn.Module):
    """MambaOut's gated CNN block (Yu & Wang 2024), channels last: ``x + fc2(gelu(g) * [i, dwconv(c)])``
    with ``g, i, c`` split from ``fc1(norm(x))`` and a depthwise ``kernel_size`` convolution on ``c``."""

    def __init__(self, dim: int, spatial_dims: int, kernel_size: int = 7, expansion_ratio: float = 8 / 3,
                 conv_ratio: float = 1.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        if not 0 < conv_channels <= hidden:
            raise ConfigError(f"gated_cnn conv_ratio {conv_ratio} gives {conv_channels} conv channels of {hidden}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.split = (hidden, hidden - conv_channels, conv_channels)
        self.conv = conv(conv_channels, conv_channels, kernel_size, padding=kernel_size // 2, groups=conv_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split, dim=-1)
        c = self.conv(c.movedim(-1, 1)).movedim(1, -1)
        out = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        if self.training and self.drop_path > 0:  # stochastic depth, per sample
            keep = 1 - self.drop_path
            out = out * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep
        return x + out


class _Stage(nn.Module):
    """A downsampling (stride-2 3x3 conv + norm; the stem before the first stage) and gated CNN blocks."""

    def __init__(self, down: nn.Module, blocks: list[GatedCNNBlock]) -> None:
        super().__init__()
        self.down, self.blocks = down, nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(x).movedim(1, -1)).movedim(-1, 1)


@component("gated_cnn", family="image encoder")
class GatedCNNEncoder(nn.Module):
    """A MambaOut-style gated CNN (the defaults are MambaOut-Femto's stages): a stem of two stride-2
    3x3 convolutions (norm, GELU between), stages of :class:`GatedCNNBlock` with a stride-2 3x3
    convolution + norm between them, global average pooling and a LayerNorm; ``width = dims[-1]``.

    2D or 3D by ``input_shape``; any input size works (the check keeps the bundle's preprocessing
    and the model in step), the total stride is ``4 * 2**(len(dims) - 1)``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        in_channels: int = 1,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (48, 96, 192, 288),
        kernel_size: int = 7,
        expansion_ratio: float = 8 / 3,
        conv_ratio: float = 1.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        _check_shape(input_shape)
        if len(depths) != len(dims) or not depths or min(depths) < 1 or min(dims) < 2:
            raise ConfigError(f"gated_cnn depths and dims need the same number (>= 1) of positive entries, got {list(depths)}, {list(dims)}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"gated_cnn kernel_size must be odd, got {kernel_size}")
        if not 0 <= drop_path_rate < 1:
            raise ConfigError(f"gated_cnn drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.input_shape, self.in_channels = tuple(input_shape), in_channels
        self.width = int(dims[-1])
        sd = len(self.input_shape)
        conv = nn.Conv2d if sd == 2 else nn.Conv3d
        rates = np.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start, previous = [], 0, in_channels
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i == 0:
                down: nn.Module = nn.Sequential(
                    conv(in_channels, dim // 2, 3, stride=2, padding=1), _ChannelsLastNorm(dim // 2, eps=1e-6), nn.GELU(),
                    conv(dim // 2, dim, 3, stride=2, padding=1), _ChannelsLastNorm(dim, eps=1e-6))
            else:
                down = nn.Sequential(conv(previous, dim, 3, stride=2, padding=1), _ChannelsLastNorm(dim, eps=1e-6))
            blocks = [GatedCNNBlock(dim, sd, kernel_size, expansion_ratio, conv_ratio, rates[start + j]) for j in range(depth)]
            stages.append(_Stage(down, blocks))
            start, previous = start + depth, dim
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.width, eps=1e-6)
        self.gradient_checkpointing = False
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_shape(x, self.in_channels, self.input_shape)
        ckpt = self.gradient_checkpointing and self.training
        for stage in self.stages:
            x = _run(stage, x, ckpt)
        return self.norm(x.flatten(2).mean(dim=2))


def _init_weights(module: nn.Module) -> None:
    """MambaOut's init: truncated normal (std 0.02) weights, zero biases, for linear and conv layers."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
