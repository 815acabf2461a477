"""Image encoders for single-channel 2D/3D radiology inputs: MONAI ViT blocks and MONAI ResNets.

Both take ``(B, C, *spatial)`` with C = 1 natively (grey images are never copied to three fake
RGB channels) and return one feature vector per image, ``(B, width)``. For 3D inputs the spatial
axes are radlens' RAS voxel axes ``(X, Y, Z)`` of a prepared array; a patch size is given in the
same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from radlens.errors import ConfigError, InputError
from radlens.models.components import component


@component("vit", family="image encoder")
class ViTEncoder(nn.Module):
    """ViT from MONAI's patch-embedding and transformer blocks, attention through PyTorch SDPA.

    MONAI 1.6's ``nets.ViT`` does not expose ``use_flash_attention`` and only adds a CLS token
    for classification, so the encoder is assembled from the same MONAI blocks
    (``PatchEmbeddingBlock``, ``TransformerBlock(use_flash_attention=True)``) instead.

    ``conv_stem`` replaces the patch projection by MoCo v3's convolutional stem (``vit_conv_*``,
    Xiao et al. 2021): ``n = log2(patch)`` 3x3 stride-2 convolutions, each with batch norm and
    ReLU, widths doubling up to ``hidden_size`` (``hidden/2**(n-1)`` ... ``hidden``), then a 1x1
    convolution to ``hidden_size``. It needs an isotropic power-of-two patch size and keeps the
    token grid (and the learnable position embeddings) of the patch projection it replaces; MoCo
    v3 drops one transformer block to compensate (``vit_conv_small``: 11 blocks).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        patch_size: Sequence[int],
        in_channels: int = 1,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        pooling: str = "cls",
        dropout: float = 0.0,
        qkv_bias: bool = True,
        sdpa: bool = True,
        conv_stem: bool = False,
    ) -> None:
        super().__init__()
        from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock

        _check_shape(input_shape)
        if len(patch_size) != len(input_shape):
            raise ConfigError(f"image.patch_size must have {len(input_shape)} entries like input_shape {list(input_shape)}, got {list(patch_size)}")
        if any(s % p for s, p in zip(input_shape, patch_size)):
            raise ConfigError(f"image.input_shape {list(input_shape)} is not divisible by patch_size {list(patch_size)}")
        if hidden_size % num_heads:
            raise ConfigError("image.hidden_size must be divisible by image.num_heads")
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"image.pooling must be 'cls' or 'mean', got {pooling!r}")
        if sdpa and dropout > 0:
            # MONAI 1.6.1's SABlock passes dropout_p to SDPA in eval mode too.
            raise ConfigError("ViT dropout > 0 needs sdpa: false (MONAI's SDPA path drops out at eval too)")
        self.input_shape, self.in_channels, self.pooling = tuple(input_shape), in_channels, pooling
        self.width = hidden_size
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=self.input_shape,
            patch_size=tuple(patch_size),
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            dropout_rate=dropout,
            spatial_dims=len(self.input_shape),
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if pooling == "cls" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout, qkv_bias, use_flash_attention=sdpa)
            for _ in range(num_layers)
        )
        if conv_stem:
            self.patch_embedding.patch_embeddings = _conv_stem(in_channels, hidden_size, tuple(patch_size),
                                                               len(self.input_shape))
        for block in self.blocks:
            # MONAI builds this LayerNorm even without cross-attention; unused parameters break DDP.
            block.norm_cross_attn = nn.Identity()
        self.norm = nn.LayerNorm(hidden_size)
        self.gradient_checkpointing = False
        nn.init.trunc_normal_(self.patch_embedding.position_embeddings, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_shape(x, self.in_channels, self.input_shape)
        h = self.patch_embedding(x)
        if self.cls_token is not None:
            h = torch.cat((self.cls_token.expand(h.shape[0], -1, -1), h), dim=1)
        for block in self.blocks:
            h = _run(block, h, self.gradient_checkpointing and self.training)
        h = self.norm(h)
        return h[:, 0] if self.cls_token is not None else h.mean(dim=1)


@component("resnet", family="image encoder")
class ResNetEncoder(nn.Module):
    """MONAI ResNet (10/18/34/50/...) with ``spatial_dims`` and one input channel, global-average pooled;
    ``width_factor`` scales the stage widths and ``stem_stride`` strides the first convolution.

    ``input_shape`` is what the model is trained for (a ResNet accepts others; the check keeps the
    bundle's preprocessing and the model in step).
    """

    def __init__(
        self, input_shape: Sequence[int], depth: int = 18, in_channels: int = 1, width_factor: float = 1.0, stem_stride: int = 1
    ) -> None:
        super().__init__()
        from monai.networks import nets

        _check_shape(input_shape)
        factory = getattr(nets, f"resnet{depth}", None)
        if factory is None:
            raise ConfigError(f"no MONAI resnet{depth}; use one of 10, 18, 34, 50, 101, 152, 200")
        if width_factor <= 0 or stem_stride < 1:
            raise ConfigError(f"image.width_factor must be > 0 and image.stem_stride >= 1, got {width_factor}, {stem_stride}")
        self.input_shape, self.in_channels = tuple(input_shape), in_channels
        # width_factor scales MONAI's stage widths (64..512); stem_stride > 1 downsamples in the first
        # convolution, which is what makes a small 3D ResNet cheap enough for CPU training.
        self.net = factory(spatial_dims=len(self.input_shape), n_input_channels=in_channels, feed_forward=False,
                           widen_factor=width_factor, conv1_t_stride=stem_stride)
        self.width = self.net.in_planes
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_shape(x, self.in_channels, self.input_shape)
        net, ckpt = self.net, self.gradient_checkpointing and self.training
        # MONAI's ResNet.forward runs the stages in one call; it is unrolled here so that each
        # stage can be checkpointed.
        h = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            h = net.maxpool(h)
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = _run(stage, h, ckpt)
        return net.avgpool(h).flatten(1)


def _conv_stem(in_channels: int, hidden_size: int, patch_size: tuple[int, ...], dims: int) -> nn.Sequential:
    """MoCo v3's ConvStem: ``log2(patch)`` 3x3 stride-2 conv + BN + ReLU, widths doubling to ``hidden_size``, then 1x1."""
    patch = patch_size[0]
    n = patch.bit_length() - 1
    if len(set(patch_size)) != 1 or patch < 2 or patch != 2**n:
        raise ConfigError(f"image.conv_stem needs one power-of-two patch size on every axis (e.g. 16), got {list(patch_size)}")
    if hidden_size % 2 ** (n - 1):
        raise ConfigError(f"image.conv_stem with patch {patch} needs hidden_size divisible by {2 ** (n - 1)}, got {hidden_size}")
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    layers: list[nn.Module] = []
    width_in = in_channels
    for i in range(n):
        width = hidden_size // 2 ** (n - 1 - i)
        layers += [conv(width_in, width, kernel_size=3, stride=2, padding=1, bias=False), norm(width), nn.ReLU(inplace=True)]
        width_in = width
    layers.append(conv(width_in, hidden_size, kernel_size=1))
    return nn.Sequential(*layers)


def _run(module: nn.Module, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """``module(x)``, recomputed in backward instead of storing activations when asked."""
    return checkpoint(module, x, use_reentrant=False) if use_checkpoint else module(x)


def check_image_shape(x: torch.Tensor, channels: int, spatial: tuple[int, ...]) -> None:
    """Raise InputError unless ``x`` is ``(B, channels, *spatial)``."""
    expected = (channels, *spatial)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise InputError(
            None,
            f"image batch of shape {tuple(x.shape)} does not fit this model: expected (B, {', '.join(map(str, expected))})"
            f" ({len(spatial)}D, {channels} channel); resample/crop to the model's input shape",
        )


def _check_shape(shape: Sequence[int]) -> None:
    if len(shape) not in (2, 3) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ConfigError(f"image.input_shape must be 2 or 3 positive ints, got {list(shape)!r}")
