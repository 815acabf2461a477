"""ClassFine: a CLIP image encoder (frozen, or fine-tuned with ``train_encoder``) + a linear (or small MLP)
head, one logit per finding.

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
    """Logits ``(B, F)`` from images: CLIP image features -> head.

    ``features``: ``embedding`` (the L2-normalised CLIP image embedding, the zero-shot space) or
    ``pooled`` (the image tower's output before the projection). ``hidden`` > 0 makes the head a
    two-layer MLP. By default the encoder is frozen and stays in eval mode (no dropout, frozen
    statistics) even when the module is put in training mode. ``train_encoder`` fine-tunes the image
    tower (and, for ``embedding``, its projection) with the head: full supervised fine-tuning from
    the CLIP initialisation; the text tower stays frozen and unused.
    """

    def __init__(
        self,
        clip: CLIPModel,
        findings: Sequence[str],
        features: str = "embedding",
        hidden: int = 0,
        dropout: float = 0.0,
        train_encoder: bool = False,
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ConfigError(f"features must be one of {FEATURES}, got {features!r}")
        if hidden < 0 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head: hidden must be >= 0 and dropout in [0, 1), got {hidden}, {dropout}")
        self.clip, self.findings, self.features = clip, list(findings), features
        self.hidden, self.dropout, self.train_encoder = hidden, dropout, train_encoder
        width = clip.embed_dim if features == "embedding" else clip.image.width
        n = len(self.findings)
        self.head = (
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n))
            if hidden else nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n))
        )
        self.clip.requires_grad_(False)
        if train_encoder:
            self.clip.image.requires_grad_(True)
            self.clip.image_proj.requires_grad_(features == "embedding")
        self.clip.eval()

    def train(self, mode: bool = True) -> ClassFineModel:
        super().train(mode)
        self.clip.eval()
        if self.train_encoder:
            self.clip.image.train(mode)
        return self

    def fixed_parts(self) -> list[str]:
        """A frozen encoder comes from its bundle unchanged: training leaves it out of checkpoints."""
        return [] if self.train_encoder else ["clip"]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``(B, width)``; a frozen encoder keeps no graph."""
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            return self.clip.encode_image(images) if self.features == "embedding" else self.clip.image(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(images).float())

