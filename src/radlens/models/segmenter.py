"""Segmenters: MONAI ``UNet`` and ``DynUNet`` (nnU-Net's architecture) as radlens components, 2D or 3D.

Every segmenter (family ``segmenter``) has one interface, which mask-conditioned generation relies on
(MRGen's segmentation-agreement filter):

- ``module(image)``: ``(B, in_channels, *spatial)`` float -> logits ``(B, K, *spatial)``, ``K`` =
  ``out_channels``, the number of labels including background;
- ``module.segment(image)``: ``(B, *spatial)`` int64 **label ids as in the prepared dataset** (the argmax
  channel mapped through ``label_ids``, which defaults to ``0..K-1``);
- ``load_model(bundle, kind="segmenter")`` loads any of them (the family name selects every kind);
- the label names travel in the bundle: ``bundle.json`` -> ``preprocessing.labels`` (``{"<id>": name}``, the
  prepared dataset's table), read by :func:`segmenter_labels`.

Any spatial size works: the input is padded (edge values repeated) up to a multiple of the network's
total stride and the logits are cropped back, so odd slice sizes need no resizing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.components import component

FAMILY = "segmenter"


class Segmenter(nn.Module):
    """Base: pads to the total stride, crops the logits back, maps argmax channels to label ids."""

    net: nn.Module

    def _setup(self, kind: str, spatial_dims: int, out_channels: int, label_ids: Sequence[int] | None, divisor: int) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"{kind}: spatial_dims must be 2 or 3, got {spatial_dims}")
        if out_channels < 2:
            raise ConfigError(f"{kind}: out_channels must count background and at least one label (>= 2), got {out_channels}")
        ids = list(range(out_channels)) if label_ids is None else [int(i) for i in label_ids]
        if len(ids) != out_channels or len(set(ids)) != len(ids) or min(ids) < 0 or ids[0] != 0:
            raise ConfigError(f"{kind}: label_ids must be {out_channels} distinct ids >= 0 starting with background 0, got {ids}")
        self.spatial_dims, self.divisor = spatial_dims, divisor
        # Not weights: rebuilt from the config, so it stays out of the state dict.
        self.register_buffer("channel_ids", torch.tensor(ids, dtype=torch.int64), persistent=False)

    @property
    def label_ids(self) -> list[int]:
        """The label id of each output channel."""
        return [int(i) for i in self.channel_ids]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, *spatial)`` of images ``(B, C, *spatial)`` of any size."""
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a (B, C, {'H, W' if self.spatial_dims == 2 else 'X, Y, Z'}) batch, got shape "
                             f"{tuple(image.shape)}")
        size = image.shape[2:]
        pad = [math.ceil(s / self.divisor) * self.divisor - s for s in size]
        if any(pad):
            widths = [w for p in reversed(pad) for w in (0, p)]
            image = F.pad(image, widths, mode="replicate")
        logits = self.net(image)
        return logits[(slice(None), slice(None), *(slice(0, s) for s in size))]

    @torch.no_grad()
    def segment(self, image: torch.Tensor) -> torch.Tensor:
        """Label ids ``(B, *spatial)`` (int64, the dataset's ids) of images ``(B, C, *spatial)``."""
        return self.channel_ids[self(image).argmax(dim=1)]


@component("unet-seg", family=FAMILY)
class UNetSegmenter(Segmenter):
    """MONAI ``UNet`` (residual units, strided convolutions): ``channels`` per level, ``strides`` between them."""

    def __init__(self, out_channels: int, spatial_dims: int = 2, in_channels: int = 1,
                 channels: Sequence[int] = (16, 32, 64, 128), strides: Sequence[int] = (2, 2, 2), num_res_units: int = 2,
                 norm: str = "instance", dropout: float = 0.0, label_ids: Sequence[int] | None = None) -> None:
        from monai.networks.nets import UNet

        super().__init__()
        if len(strides) != len(channels) - 1 or min(strides, default=1) < 1:
            raise ConfigError(f"unet-seg: strides needs one positive stride per level change (len(channels) - 1 = "
                              f"{len(channels) - 1}), got {list(strides)}")
        self._setup("unet-seg", spatial_dims, out_channels, label_ids, math.prod(strides))
        self.net = UNet(spatial_dims, in_channels, out_channels, channels=tuple(channels), strides=tuple(strides),
                        num_res_units=num_res_units, norm=norm, dropout=dropout)


@component("dynunet-seg", family=FAMILY)
class DynUNetSegmenter(Segmenter):
    """MONAI ``DynUNet``, the nnU-Net architecture: ``filters`` per level, ``strides`` (the first is the
    input block's, usually 1), one ``kernel_size`` for every level; no deep supervision."""

    def __init__(self, out_channels: int, spatial_dims: int = 2, in_channels: int = 1,
                 filters: Sequence[int] = (32, 64, 128, 256), strides: Sequence[int] = (1, 2, 2, 2), kernel_size: int = 3,
                 norm_name: str = "instance", dropout: float = 0.0, res_block: bool = False,
                 label_ids: Sequence[int] | None = None) -> None:
        from monai.networks.nets import DynUNet

        super().__init__()
        if len(filters) != len(strides) or len(strides) < 3 or min(strides) < 1:
            raise ConfigError(f"dynunet-seg: filters and strides need one entry per level (at least 3), got "
                              f"{list(filters)} and {list(strides)}")
        self._setup("dynunet-seg", spatial_dims, out_channels, label_ids, math.prod(strides))
        self.net = DynUNet(spatial_dims, in_channels, out_channels, kernel_size=[kernel_size] * len(strides),
                           strides=list(strides), upsample_kernel_size=list(strides[1:]), filters=list(filters),
                           norm_name=norm_name, dropout=dropout or None, res_block=res_block)


def segmenter_labels(bundle_path: str | os.PathLike[str]) -> dict[int, str]:
    """The label table ``{id: name}`` (ids as in the prepared dataset, 0 = background) of a segmenter bundle
    (or of a run folder's ``best/``), from ``bundle.json`` -> ``preprocessing.labels``."""
    from radlens.models.bundle import INDEX, read_index, resolve_bundle

    folder = resolve_bundle(bundle_path)
    labels = (read_index(folder).get("preprocessing") or {}).get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(folder / INDEX, "no label table (preprocessing.labels): not a segmenter bundle written by radlens train seg")
    try:
        return {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    except (TypeError, ValueError) as err:
        raise InputError(folder / INDEX, f"preprocessing.labels must map integer ids to names ({err})") from err
