"""The typed option groups of ``radlens train moco`` that are MoCo's own (kept light: the CLI imports them)."""

from __future__ import annotations

from dataclasses import dataclass

from radlens.errors import ConfigError


@dataclass
class MocoLossConfig:
    """MoCo v3's InfoNCE: ``temperature`` T (0.2 as MoCo v3's ViTs; 1.0 for its ResNets);
    ``lesion_weight`` w of LeCL's lesion-negative term (:mod:`radlens.losses.moco`; 0 = plain MoCo v3)."""

    temperature: float = 0.2
    lesion_weight: float = 0.0


@dataclass
class MocoConfig:
    """The MoCo heads and momentum: projector (``proj_layers``) and predictor (``pred_layers``) MLPs
    with ``hidden`` units and ``dim`` outputs (MoCo v3: 3, 2, 4096, 256); ``momentum`` of the key
    encoder and ``momentum_cosine`` (its half-cosine ramp to 1 over training); ``knn_k``
    neighbours of the validation kNN."""

    dim: int = 256
    hidden: int = 4096
    proj_layers: int = 3
    pred_layers: int = 2
    momentum: float = 0.99
    momentum_cosine: bool = False
    knn_k: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"moco.momentum must be in [0, 1], got {self.momentum}")
        if self.knn_k < 1:
            raise ConfigError(f"moco.knn_k must be >= 1, got {self.knn_k}")
