"""CLIP: an image tower and a text tower projected to one shared, L2-normalised embedding space."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from radlens.models.components import component, frozen_subtrees
from radlens.models.image import ResNetEncoder, ViTEncoder
from radlens.models.text import TextEncoder


@component("clip", family="clip")
class CLIPModel(nn.Module):
    """Two towers + linear projections to ``embed_dim`` + a learnable temperature.

    The temperature is stored as ``t`` with ``logit_scale = exp(t)``, initialised at
    ``1 / init_temperature`` (1/0.07) and clamped at ``max_logit_scale`` (100) when read, so it
    can neither go negative nor blow up (M3D trains the raw scale; CT-CLIP's is unclamped).
    ``preprocessing`` is what a bundle says the inputs need (empty for a fresh model).
    """

    def __init__(
        self,
        image: ViTEncoder | ResNetEncoder,
        text: TextEncoder,
        embed_dim: int = 512,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.image, self.text = image, text
        self.image_proj = nn.Linear(image.width, embed_dim, bias=False)
        self.text_proj = nn.Linear(text.width, embed_dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_logit_scale = max_logit_scale
        self.embed_dim = embed_dim
        self.preprocessing: dict[str, Any] = {}
        self.set_gradient_checkpointing(gradient_checkpointing)

    @property
    def logit_scale(self) -> torch.Tensor:
        """``exp(t)`` clamped at ``max_logit_scale``."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def fixed_parts(self) -> list[str]:
        """The frozen modules of a pretrained text tower: training leaves them out of checkpoints (a
        resumed run loads them again); a scratch tower's random weights are kept."""
        kind = (getattr(self.text, "config", None) or {}).get("kind")
        return frozen_subtrees(self.text, "text.") if kind in ("minilm", "pretrained") else []

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)`` an image must have (batch dimension excluded)."""
        return (self.image.in_channels, *self.image.input_shape)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> L2-normalised (B, embed_dim)."""
        return F.normalize(self.image_proj(self.image(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids + mask from :meth:`tokenize` -> L2-normalised (B, embed_dim)."""
        return F.normalize(self.text_proj(self.text(input_ids, attention_mask)), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> ``{"input_ids", "attention_mask"}``; too long texts follow ``text.on_overflow``."""
        return self.text.tokenize(texts)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings, logit_scale), ready for ``ContrastiveLoss``."""
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), self.logit_scale

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Trade compute for memory in both towers."""
        self.image.gradient_checkpointing = enabled
        self.text.set_gradient_checkpointing(enabled)

    @staticmethod
    def describe(config: dict[str, Any]) -> str:
        """One line for ``radlens models``: the two towers."""
        image, text = config["image"], config["text"]
        if image["kind"] == "vit":
            towers = f"vit patch {'x'.join(map(str, image['patch_size']))}"
        else:
            towers = (f"resnet{image.get('depth', 18)} x{image.get('width_factor', 1.0):g} width, "
                      f"stem stride {image.get('stem_stride', 1)}")
        name = {"scratch": "scratch BERT", "minilm": "MiniLM-L6 (packaged)"}.get(text["kind"], text.get("path_or_id"))
        return f"{towers} + {name}, ctx {text.get('context_length', 128)}"
