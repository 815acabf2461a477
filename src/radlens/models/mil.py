"""MIL heads over bags of precomputed embeddings (slices of a study), with a padding mask.

MONAI's ``MILModel`` takes images and has no mask; these heads take features ``(B, N, D)`` and a
mask ``(B, N)`` (True = a real instance), so zero-padded bags of different sizes give the same
result as each bag alone (CLEAR pools padded bags without a mask): padding is masked out of
every softmax (``-inf`` scores, ``key_padding_mask``) and out of every mean.

Every head returns logits ``(B, n_classes)`` and exposes the per-instance weight of its pooling,
``attention(feats, mask) -> (B, N)`` (0 on padding, summing to 1 over a bag's instances);
:meth:`MILHead.logits_and_attention` gives both from one pass.

- ``mean_mil``: mean pooling (the baseline; its "attention" is uniform over real instances);
- ``abmil``: attention-based MIL (Ilse et al. 2018), ``gated`` for the gated variant;
- ``pma_mil``: a small transformer encoder over the instances, then pooling by multi-head
  attention with a learned seed (Set Transformer's PMA, one seed).

The output layer's weights start at zero (its bias as usual): with a random classifier the
attention learns, from the first step, to pool whatever the classifier's random sign favours and
can settle on avoiding the very instances that carry the signal (ABMIL did so for half of the
initialisations on a toy task where mean pooling never failed); from zero, the attention gets no
gradient until the classifier has learnt which way the pooled features point.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.models.components import component


def _classifier(dropout: float, width: int, n_classes: int, *first: nn.Module) -> nn.Sequential:
    """``first`` layers -> dropout -> a linear output layer whose weights start at zero (see the module docstring)."""
    out = nn.Linear(width, n_classes)
    nn.init.zeros_(out.weight)
    return nn.Sequential(*first, nn.Dropout(dropout), out)


def _check(kind: str, in_dim: int, hidden: int, n_classes: int, dropout: float) -> None:
    if min(in_dim, n_classes) < 1 or hidden < 0 or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{kind}: in_dim and n_classes must be >= 1, hidden >= 0 and dropout in [0, 1), got "
                          f"{in_dim}, {n_classes}, {hidden}, {dropout}")


class MILHead(nn.Module, abc.ABC):
    """Base of the MIL heads: ``forward`` gives logits, ``attention`` the pooling weights."""

    @abc.abstractmethod
    def logits_and_attention(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, n_classes)`` and pooling weights ``(B, N)`` of bags ``(B, N, D)`` with mask ``(B, N)``."""

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for bags ``(B, N, in_dim)`` with mask ``(B, N)`` (True = real)."""
        return self.logits_and_attention(feats, mask)[0]

    def attention(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) pooling weights, exactly 0 on padding, summing to 1 over each bag's instances."""
        return self.logits_and_attention(feats, mask)[1]


@component("mean_mil", family="mil head")
class MeanMIL(MILHead):
    """Mean pooling over a bag's real instances (``hidden`` > 0: a Linear + ReLU per instance first)
    -> dropout -> linear classifier."""

    def __init__(self, in_dim: int, n_classes: int = 1, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        _check("mean_mil", in_dim, hidden, n_classes, dropout)
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU()) if hidden else nn.Identity()
        self.classifier = _classifier(dropout, hidden or in_dim, n_classes)

    def logits_and_attention(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.bool()
        weights = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1)
        return self.classifier(torch.einsum("bn,bnd->bd", weights, self.embed(feats))), weights


@component("abmil", family="mil head")
class ABMIL(MILHead):
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
        self.classifier = _classifier(dropout, in_dim, n_classes)

    def logits_and_attention(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.attention_v(feats)
        if self.attention_u is not None:
            h = h * self.attention_u(feats)
        scores = self.attention_w(h).squeeze(-1).masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return self.classifier(torch.einsum("bn,bnd->bd", weights, feats)), weights


@component("pma_mil", family="mil head")
class PMAMIL(MILHead):
    """Transformer pooling: a linear projection to ``hidden``, ``num_layers`` pre-norm transformer
    encoder layers over the instances (padding as ``src_key_padding_mask``), then pooling by
    multi-head attention with one learned seed query (PMA, Lee et al. 2019; padding as
    ``key_padding_mask``) -> LayerNorm -> dropout -> linear classifier. The attention weights are
    the seed's, averaged over heads. ``num_layers`` 0 pools the projected instances directly.
    """

    def __init__(self, in_dim: int, hidden: int = 128, n_classes: int = 1, num_heads: int = 4, num_layers: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check("pma_mil", in_dim, hidden, n_classes, dropout)
        if hidden < 1 or num_heads < 1 or hidden % num_heads or num_layers < 0:
            raise ConfigError(f"pma_mil: hidden must be a positive multiple of num_heads and num_layers >= 0, got "
                              f"hidden={hidden}, num_heads={num_heads}, num_layers={num_layers}")
        self.project = nn.Linear(in_dim, hidden)
        layer = nn.TransformerEncoderLayer(hidden, num_heads, dim_feedforward=2 * hidden, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = (nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
                        if num_layers else None)
        self.seed = nn.Parameter(torch.randn(1, 1, hidden) * hidden**-0.5)
        self.pool = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.classifier = _classifier(dropout, hidden, n_classes, nn.LayerNorm(hidden))

    def logits_and_attention(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = ~mask.bool()
        h = self.project(feats)
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=padding)
        seed = self.seed.expand(len(h), -1, -1)
        pooled, weights = self.pool(seed, h, h, key_padding_mask=padding, need_weights=True, average_attn_weights=True)
        return self.classifier(pooled[:, 0]), weights[:, 0]
