"""The typed option groups of ``radlens train moco`` that are MoCo's own (kept light: the CLI imports them)."""

from __future__ import annotations

from dataclasses import dataclass

from radlens.errors import ConfigError


@dataclass
class MocoLossConfig:
    """MoCo v3's InfoNCE and LeCL's lesion term (:mod:`radlens.losses.moco`).

    Attributes:
        temperature: InfoNCE temperature T (0.2 as MoCo v3's ViTs; 1.0 for its ResNets).
        lesion_weight: weight w of LeCL's second entry of the batch's lesion keys in the InfoNCE
            denominator (0: plain MoCo v3).
    """

    temperature: float = 0.2
    lesion_weight: float = 0.0


@dataclass
class MocoConfig:
    """The MoCo heads and momentum (MoCo v3: 3-layer projector, 2-layer predictor, 4096 hidden, 256 out).

    Attributes:
        dim: output size of the projector and predictor MLPs.
        hidden: hidden units of the projector and predictor MLPs.
        proj_layers: layers of the projector MLP.
        pred_layers: layers of the predictor MLP.
        momentum: momentum of the key encoder's moving average of the query encoder.
        momentum_cosine: ramp the momentum to 1 over training on a half cosine.
        knn_k: neighbours of the validation kNN lesion classifier.
    """

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
