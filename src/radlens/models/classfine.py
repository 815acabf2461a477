"""ClassFine: a frozen CLIP image encoder + a trainable linear (or small MLP) head, one logit per finding.

A component (kind ``classfine``): its bundle holds the CLIP encoder's config and files nested
under ``clip/`` and all weights; the validation thresholds chosen after training travel in the
bundle's ``extra.classfine``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.models.clip import CLIPModel
from radlens.models.components import component

FEATURES = ("embedding", "pooled")


@component("classfine", family="probe")
class ClassFineModel(nn.Module):
    """Logits ``(B, F)`` from images: frozen CLIP features -> head.

    ``features``: ``embedding`` (the L2-normalised CLIP image embedding, the zero-shot space) or
    ``pooled`` (the image tower's output before the projection). ``hidden`` > 0 makes the head a
    two-layer MLP. The encoder stays in eval mode (no dropout, frozen statistics) even when the
    module is put in training mode.
    """

    def __init__(
        self,
        clip: CLIPModel,
        findings: Sequence[str],
        features: str = "embedding",
        hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ConfigError(f"features must be one of {FEATURES}, got {features!r}")
        if hidden < 0 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head: hidden must be >= 0 and dropout in [0, 1), got {hidden}, {dropout}")
        self.clip, self.findings, self.features = clip, list(findings), features
        self.hidden, self.dropout = hidden, dropout
        width = clip.embed_dim if features == "embedding" else clip.image.width
        n = len(self.findings)
        self.head = (
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n))
            if hidden else nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n))
        )
        self.clip.requires_grad_(False)
        self.clip.eval()

    def train(self, mode: bool = True) -> ClassFineModel:
        super().train(mode)
        self.clip.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen features ``(B, width)`` (no graph is kept)."""
        with torch.no_grad():
            return self.clip.encode_image(images) if self.features == "embedding" else self.clip.image(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images).float())

