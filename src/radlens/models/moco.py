"""MoCo v3 (Chen, Xie & He 2021): a base encoder with projector and predictor MLPs, and a momentum copy.

The component ``moco`` holds any registered image encoder (``vit`` with or without the conv stem,
``swin``, ``resnet``, ``gated_cnn``) as ``encoder``; its config is the encoder's config plus the
head sizes. The momentum encoder and projector are deep copies that never get gradients
(``requires_grad`` off) and follow the base by an exponential moving average
(:meth:`MoCo.update_momentum`); they are ordinary submodules, so checkpoints and bundles hold them
and a resumed run continues with the same keys.

``encode(images)`` gives the base encoder's features ``(B, width)``: the slice embedding that
downstream use (bag extraction, probes) takes. The loss is in :mod:`radlens.losses.moco`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.models.components import component


def mlp(num_layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool = True) -> nn.Sequential:
    """MoCo v3's MLP: ``Linear`` (no bias) + ``BatchNorm1d`` + ReLU between layers, and an affine-free
    batch norm after the last layer when ``last_bn`` (the projector; not the predictor)."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        a = in_dim if i == 0 else hidden
        b = out_dim if i == num_layers - 1 else hidden
        layers.append(nn.Linear(a, b, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*layers)


@component("moco", family="self-supervised")
class MoCo(nn.Module):
    """MoCo v3 around ``encoder``: query ``q = predictor(projector(encoder(x)))``, key
    ``k = momentum_projector(momentum_encoder(x))`` (no gradient).

    ``proj_layers`` (3 for ViTs in MoCo v3, 2 for ResNets) and ``pred_layers`` (2) MLPs with
    ``hidden`` units and ``dim`` outputs (MoCo v3: 4096 and 256).
    """

    def __init__(self, encoder: nn.Module, dim: int = 256, hidden: int = 4096, proj_layers: int = 3,
                 pred_layers: int = 2) -> None:
        super().__init__()
        if min(dim, hidden) < 1 or min(proj_layers, pred_layers) < 1:
            raise ConfigError(f"moco dim, hidden, proj_layers and pred_layers must be >= 1, got {dim}, {hidden}, {proj_layers}, {pred_layers}")
        width = getattr(encoder, "width", None)
        if not isinstance(width, int):
            raise ConfigError(f"moco encoder {type(encoder).__name__} is not an image encoder (no .width)")
        self.encoder = encoder
        self.projector = mlp(proj_layers, width, hidden, dim)
        self.predictor = mlp(pred_layers, dim, hidden, dim, last_bn=False)
        self.momentum_encoder = copy.deepcopy(encoder)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in (*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()):
            p.requires_grad_(False)

    @property
    def width(self) -> int:
        """Width of :meth:`encode`'s features."""
        return int(self.encoder.width)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)`` of an input image."""
        return (int(self.encoder.in_channels), *self.encoder.input_shape)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The base encoder's features ``(B, width)`` of ``(B, C, *spatial)`` images."""
        return self.encoder(images)

    def query(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, q)``: the base encoder's features and the predictor's output."""
        h = self.encoder(images)
        return h, self.predictor(self.projector(h))

    @torch.no_grad()
    def key(self, images: torch.Tensor) -> torch.Tensor:
        """The momentum branch's output (no gradient)."""
        return self.momentum_projector(self.momentum_encoder(images))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Queries, keys and features of both views: ``q1, q2, k1, k2`` ``(B, dim)``, ``h1, h2`` ``(B, width)``.

        Each view goes through the networks on its own, so batch norm sees one view's batch at a
        time (as in MoCo v3). Call :meth:`update_momentum` before, once per optimiser step.
        """
        h1, q1 = self.query(view1)
        h2, q2 = self.query(view2)
        return {"q1": q1, "q2": q2, "k1": self.key(view1), "k2": self.key(view2), "h1": h1, "h2": h2}

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``momentum <- m * momentum + (1 - m) * base`` for every encoder and projector parameter."""
        pairs = [*zip(self.momentum_encoder.parameters(), self.encoder.parameters()),
                 *zip(self.momentum_projector.parameters(), self.projector.parameters())]
        for momentum, base in pairs:
            momentum.mul_(m).add_(base.detach(), alpha=1 - m)
