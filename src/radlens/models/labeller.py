"""The report labeller's network: a BERT-family text tower + a multi-label linear head (one logit per finding).

A component (kind ``report_labeller``): its bundle keeps the tower's transformers config and
tokenizer under ``text/``; thresholds and report sections chosen in training travel in the
bundle's ``extra.labeller``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from radlens.models.components import component
from radlens.models.text import TextEncoder

TINY = {"kind": "scratch", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128,
        "vocab_size": 1024, "pooling": "cls"}


def encoder_spec(encoder: str, context_length: int) -> dict[str, Any]:
    """Text-encoder spec: ``minilm`` (packaged, offline), ``tiny`` (from scratch), or a BERT-family folder / hub id.

    Long reports are truncated to ``context_length`` tokens (the labeller sees the report start).
    """
    common = {"context_length": context_length, "on_overflow": "truncate"}
    if encoder == "minilm":
        return {"kind": "minilm", "pooling": "mean", **common}
    if encoder == "tiny":
        return {**TINY, **common}
    return {"kind": "pretrained", "path_or_id": encoder, "pooling": "cls", **common}


@component("report_labeller", family="report labeller")
class ReportLabeller(nn.Module):
    """Logits ``(B, F)`` for tokenised reports; ``tokenize`` is the encoder's own tokenizer."""

    def __init__(self, text: TextEncoder, findings: Sequence[str], dropout: float = 0.1) -> None:
        super().__init__()
        self.text, self.findings, self.dropout = text, list(findings), dropout
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(text.width, len(self.findings)))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.text.tokenize(texts)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.text(input_ids, attention_mask))
