"""The report labeller's network and bundle: a BERT-family text encoder + a multi-label linear head.

Bundle layout (a folder, written atomically)::

    BUNDLE/
      config.json          format, findings, validation thresholds, report sections, text-encoder spec
      model.safetensors    encoder + head weights (never pickled)
      text/                the encoder's transformers config.json + tokenizer files
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from radlens.errors import InputError
from radlens.models.bundle import read_versioned_config
from radlens.models.text import TextEncoder

FORMAT = "radlens-report-labeller"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TEXT_DIR = "text"
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


class ReportCollate:
    """Tokenise report items ``{"text", "targets", "index"}`` into a :class:`MultiLabelModule` batch."""

    def __init__(self, tokenize: Any) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "inputs": self.tokenize([it["text"] for it in items]),
            "targets": torch.stack([torch.as_tensor(it["targets"]) for it in items]),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }


class ReportDataset:
    """Reports and their (N, F) targets; keys are indices or ``(index, epoch)`` from the batch sampler."""

    def __init__(self, texts: Sequence[str], targets: np.ndarray) -> None:
        self.texts, self.targets = list(texts), np.asarray(targets, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = int(key[0]) if isinstance(key, tuple) else int(key)
        return {"text": self.texts[index], "targets": self.targets[index], "index": index}


def save_labeller(
    model: ReportLabeller, folder: str | os.PathLike[str], spec: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write the bundle; ``meta`` holds thresholds, sections and run info (JSON-able)."""
    from safetensors.torch import save_model

    from radlens import __version__
    from radlens.common.atomic import staged_output

    with staged_output(folder) as tmp:
        config = {"format": FORMAT, "format_version": FORMAT_VERSION, "radlens_version": __version__,
                  "findings": model.findings, "dropout": model.dropout, "text": spec, **meta}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.text.model.config.save_pretrained(tmp / TEXT_DIR)
        model.text.tokenizer.save_pretrained(tmp / TEXT_DIR)
        save_model(model, str(tmp / WEIGHTS))
    return Path(folder)


def read_labeller_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The bundle's ``config.json``, checked to be a report-labeller bundle."""
    return read_versioned_config(folder, FORMAT, FORMAT_VERSION, "labeller")


def load_labeller(folder: str | os.PathLike[str]) -> tuple[ReportLabeller, dict[str, Any]]:
    """(model in eval mode, bundle config) from a labeller bundle; weights from safetensors only."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from radlens.models.text import encoder_from_parts

    folder = Path(folder)
    config = read_labeller_config(folder)
    text_dir = folder / TEXT_DIR
    try:
        text_model = AutoModel.from_config(AutoConfig.from_pretrained(text_dir, local_files_only=True))
        tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(text_dir, f"bundle text encoder cannot be read ({err})") from err
    model = ReportLabeller(encoder_from_parts(text_model, tokenizer, config["text"]), config["findings"], config["dropout"])
    if not (folder / WEIGHTS).is_file():
        raise InputError(folder / WEIGHTS, "labeller bundle has no model.safetensors")
    try:
        load_model(model, str(folder / WEIGHTS), strict=True)
    except RuntimeError as err:
        raise InputError(folder / WEIGHTS, f"weights do not match the bundle's config ({err})") from err
    return model.eval(), config
