"""Attention-MIL heads over bags of precomputed embeddings (slices of a study), with a padding mask.

MONAI's ``MILModel`` takes images and has no mask; these heads take features ``(B, N, D)`` and a
mask ``(B, N)`` (True = a real instance), so zero-padded bags of different sizes give the same
result as each bag alone (CLEAR pools padded bags without a mask).
"""

from __future__ import annotations

import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.models.components import component


@component("abmil", family="mil head")
class ABMIL(nn.Module):
    """Attention-based MIL (Ilse et al. 2018): ``a_i = softmax(w^T tanh(V h_i) [* sigmoid(U h_i)])``,
    bag vector ``sum_i a_i h_i`` -> linear classifier; ``gated`` adds the sigmoid gate."""

    def __init__(self, in_dim: int, hidden: int = 128, n_classes: int = 1, gated: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if min(in_dim, hidden, n_classes) < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"abmil: in_dim, hidden, n_classes must be >= 1 and dropout in [0, 1), got "
                              f"{in_dim}, {hidden}, {n_classes}, {dropout}")
        self.attention_v = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Linear(in_dim, hidden), nn.Sigmoid()) if gated else None
        self.attention_w = nn.Linear(hidden, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))

    def attention(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) attention weights, exactly 0 on padding, summing to 1 over each bag's instances."""
        h = self.attention_v(feats)
        if self.attention_u is not None:
            h = h * self.attention_u(feats)
        scores = self.attention_w(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for bags ``(B, N, in_dim)`` with mask ``(B, N)``."""
        weights = self.attention(feats, mask.bool())
        return self.classifier(torch.einsum("bn,bnd->bd", weights, feats))
