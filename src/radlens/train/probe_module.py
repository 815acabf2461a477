"""ClassFine: a frozen CLIP image encoder + a trainable linear (or small MLP) head, one logit per finding.

The head trains with class-weighted BCE (``pos_weight`` = negatives / positives per finding in
training, so rare findings are not drowned out). A ClassFine bundle is a CLIP bundle (usable as
is by zero-shot and ``radlens embed``) plus ``head.safetensors``, with the head's architecture,
findings and validation thresholds under ``extra.classfine`` in ``config.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.clip import CLIPModel
from radlens.train.clip_module import ClipModule
from radlens.train.config import OptimConfig

HEAD_WEIGHTS = "head.safetensors"
FEATURES = ("embedding", "pooled")


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
        self.thresholds: dict[str, float] | None = None
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

    def head_config(self) -> dict[str, Any]:
        return {"findings": self.findings, "features": self.features, "hidden": self.hidden, "dropout": self.dropout}


class FindingScoresModule(ClipModule):
    """A :class:`ClipModule` validated on per-finding scores: logs ``val/mean_auroc`` at each epoch end.

    Its subclasses' ``validation_step`` append ``{"scores": (B, F), "targets": (B, F)}`` to ``self._val``.
    """

    def on_validation_epoch_end(self) -> None:
        if self._val:
            scores = torch.cat([v["scores"] for v in self._val]).numpy()
            targets = torch.cat([v["targets"] for v in self._val]).numpy()
            self.log("val/mean_auroc", mean_auroc(targets, scores))
        self._val = []


class MultiLabelModule(FindingScoresModule):
    """Multi-label training with class-weighted BCE; logs ``val/loss`` and ``val/mean_auroc``.

    Used by ClassFine (images) and the report labeller (tokens): a batch is ``{"inputs": kwargs of
    the model's forward, "targets": (B, F) 0/1}``. Reuses :class:`ClipModule`'s optimiser (AdamW
    without decay on biases/norms, warm-up + cosine) and its resumable RNG checkpointing; only
    trainable parameters reach the optimiser.
    """

    def __init__(self, model: nn.Module, pos_weight: np.ndarray, optim: OptimConfig | None = None) -> None:
        super().__init__(model, None, optim)
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))

    def _bce(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(**batch["inputs"]).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"], pos_weight=self.pos_weight)
        return loss, logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _ = self._bce(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(batch["targets"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, logits = self._bce(batch)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(batch["targets"]))
        self._val.append({"scores": logits.sigmoid().cpu(), "targets": batch["targets"].cpu()})


def mean_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the findings that have both classes (NaN when none has)."""
    from radlens.metrics.findings import score_metrics

    values = [score_metrics(targets[:, f], scores[:, f])["auroc"] for f in range(targets.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def predict_scores(
    model: nn.Module, dataset: Any, batch_size: int = 8, device: torch.device | str = "cpu", collate: Any = None
) -> np.ndarray:
    """(N, F) probabilities for every item of ``dataset`` (batches as :class:`MultiLabelModule` takes them)."""
    from torch.utils.data import DataLoader

    from radlens.train.probe_data import collate_findings

    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate or collate_findings):
            inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
            out.append(model(**inputs).float().sigmoid().cpu().numpy())
    return np.concatenate(out)


def save_classfine(
    model: ClassFineModel, folder: str | os.PathLike[str], preprocessing: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Write the ClassFine bundle (CLIP bundle + ``head.safetensors``) atomically."""
    from safetensors.torch import save_model

    from radlens.common.atomic import staged_output
    from radlens.models.bundle import save_bundle

    extra = dict(extra or {})
    extra["classfine"] = {**model.head_config(), **extra.get("classfine", {})}
    with staged_output(folder) as tmp:
        save_bundle(model.clip, tmp, preprocessing, extra)
        save_model(model.head, str(tmp / HEAD_WEIGHTS))
    return Path(folder)


def load_classfine(folder: str | os.PathLike[str]) -> ClassFineModel:
    """A ClassFine model (eval mode) from its bundle; ``model.thresholds`` holds the saved thresholds."""
    from safetensors.torch import load_model

    from radlens.models.bundle import load_bundle, read_bundle_config

    folder = Path(folder)
    spec = read_bundle_config(folder).get("extra", {}).get("classfine")
    weights = folder / HEAD_WEIGHTS
    if not isinstance(spec, dict) or not weights.is_file():
        raise InputError(folder, "not a ClassFine bundle (no extra.classfine in config.json or no head.safetensors)")
    model = ClassFineModel(load_bundle(folder), spec["findings"], spec["features"], spec["hidden"], spec["dropout"])
    try:
        load_model(model.head, str(weights), strict=True)
    except RuntimeError as err:
        raise InputError(weights, f"head weights do not match extra.classfine ({err})") from err
    model.thresholds = spec.get("thresholds")
    return model.eval()
