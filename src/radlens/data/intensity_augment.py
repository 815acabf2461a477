"""Strong intensity randomisation for contrast-agnostic segmentation (``radlens train seg``).

A segmenter trained on one MRI contrast (say T1-weighted) learns that contrast's grey values:
white matter bright, CSF dark. MRGen needs one that also segments T2-weighted or FLAIR images of
the same anatomy, whose tissue order is different or reversed, to judge generated images. The
remedy (the idea of SynthSeg, Billot et al. 2023) is to make intensity useless as a cue during
training, so that only shape, position and boundaries are left to learn:

1. **Per-label random intensity remap** (``remap_prob``): every structure of the label map
   (background included) gets a random new mean intensity in [0, 1] and a random contrast for
   its own texture, ``new = mean_l + scale_l * (x - mean_l(x))``; any order of tissue brightness
   becomes possible (T1-like, T2-like, inverted, ...). A light Gaussian blur afterwards
   (``smooth_prob``) softens the new edges like partial volume does, and the result is mapped
   linearly back onto the image's own value range.
2. **MONAI intensity transforms**, each with its own probability: a smooth multiplicative bias
   field (``RandBiasField``), random gamma (``RandAdjustContrast``), a random monotone remap of
   the histogram (``RandHistogramShift``) and Gaussian noise (``RandGaussianNoise``); and a
   contrast inversion ``x -> max + min - x`` (``invert_prob``; bright becomes dark, range kept).

The mask is read, never changed. Every draw comes from the item seed alone (:func:`radlens.data.augment.item_seed`),
so a sample is the same in any worker and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose


@dataclass
class IntensityAugmentConfig:
    """Intensity randomisation of training images (probabilities are per image).

    Attributes:
        enabled: apply it at all (training split only).
        remap_prob: probability of the per-label random intensity remap (each label a new random mean).
        remap_scale: range of the factor applied to a label's own texture (deviations from its mean) in a remap.
        smooth_prob: probability of a Gaussian blur after a remap (softens label edges like partial volume).
        smooth_sigma: range of the blur's sigma in pixels.
        bias_prob: probability of a smooth multiplicative bias field (MONAI RandBiasField, degree 3).
        bias_coeff: largest bias-field polynomial coefficient.
        gamma_prob: probability of a random gamma (MONAI RandAdjustContrast).
        gamma: range of the gamma.
        invert_prob: probability of inverting the contrast within the image's range (bright becomes dark).
        histogram_prob: probability of a random monotone histogram remap (MONAI RandHistogramShift).
        histogram_points: range of the number of control points of the histogram remap.
        noise_prob: probability of additive Gaussian noise.
        noise_std: largest noise standard deviation (in prepared intensity units).
    """

    enabled: bool = True
    remap_prob: float = 0.5
    remap_scale: tuple[float, float] = (0.5, 1.5)
    smooth_prob: float = 0.3
    smooth_sigma: tuple[float, float] = (0.25, 1.0)
    bias_prob: float = 0.5
    bias_coeff: float = 0.3
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.5, 2.0)
    invert_prob: float = 0.1
    histogram_prob: float = 0.3
    histogram_points: tuple[int, int] = (5, 10)
    noise_prob: float = 0.3
    noise_std: float = 0.05

    def __post_init__(self) -> None:
        probs = (self.remap_prob, self.smooth_prob, self.bias_prob, self.gamma_prob, self.invert_prob,
                 self.histogram_prob, self.noise_prob)
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ConfigError(f"intensity augmentation probabilities must lie in [0, 1], got {probs}")
        for name, (lo, hi) in (("remap_scale", self.remap_scale), ("smooth_sigma", self.smooth_sigma), ("gamma", self.gamma)):
            if not 0 < lo <= hi:
                raise ConfigError(f"intensity augmentation {name} must be a range 0 < low <= high, got {(lo, hi)}")
        if not 2 <= self.histogram_points[0] <= self.histogram_points[1] or self.bias_coeff < 0 or self.noise_std < 0:
            raise ConfigError("histogram_points must be a range of at least 2 points; bias_coeff and noise_std must be >= 0")


def remap_labels(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """Per-label random intensity remap: each label's voxels (ids as found, -1 included) move to a random mean
    in [0, 1] with their deviations from the label's mean scaled by a random factor in ``scale``."""
    out = np.empty_like(image, dtype=np.float32)
    for label in np.unique(mask):
        where = mask == label
        values = image[where]
        out[where] = rng.uniform(0.0, 1.0) + rng.uniform(*scale) * (values - values.mean())
    return out


class IntensityAugment:
    """``augment(image, mask, seed) -> image``: the randomisation of :class:`IntensityAugmentConfig` for
    channel-first images ``(C, *spatial)`` of ``spatial_dims`` dimensions with their label maps ``(1, *spatial)``."""

    def __init__(self, cfg: IntensityAugmentConfig, spatial_dims: int) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"intensity augmentation needs 2D or 3D images, got {spatial_dims} dimensions")
        self.cfg, self.spatial_dims = cfg, spatial_dims
        self.smooth, self.transforms = self._build()

    def _build(self) -> tuple[Compose, Compose]:
        from monai.transforms import (
            Compose,
            RandAdjustContrast,
            RandBiasField,
            RandGaussianNoise,
            RandGaussianSmooth,
            RandHistogramShift,
        )

        cfg = self.cfg
        sigma = {f"sigma_{a}": tuple(cfg.smooth_sigma) for a in "xyz"[: self.spatial_dims]}
        smooth = Compose([RandGaussianSmooth(prob=1.0, **sigma)])  # type: ignore[arg-type]
        transforms = Compose([
            RandBiasField(degree=3, coeff_range=(0.0, cfg.bias_coeff), prob=cfg.bias_prob),
            RandAdjustContrast(prob=cfg.gamma_prob, gamma=tuple(cfg.gamma)),
            RandHistogramShift(num_control_points=tuple(cfg.histogram_points), prob=cfg.histogram_prob),
            RandGaussianNoise(prob=cfg.noise_prob, std=cfg.noise_std),
        ])
        return smooth, transforms

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
        import torch

        if not self.cfg.enabled:
            return image
        states = np.random.SeedSequence([seed, 0x5E6]).generate_state(3)
        rng = np.random.default_rng(int(states[0]))
        array = image.detach().cpu().numpy().astype(np.float32)
        if rng.random() < self.cfg.remap_prob:
            lo, hi = float(array.min()), float(array.max())
            labels = np.broadcast_to(mask.detach().cpu().numpy(), array.shape)
            array = remap_labels(array, labels, rng, self.cfg.remap_scale)
            if rng.random() < self.cfg.smooth_prob:
                self.smooth.set_random_state(seed=int(states[1]))
                array = np.asarray(self.smooth(array), dtype=np.float32)
            span = float(array.max() - array.min())
            array = lo + (array - array.min()) * ((hi - lo) / span if span > 0 else 0.0)
        if rng.random() < self.cfg.invert_prob:
            array = array.max() + array.min() - array
        self.transforms.set_random_state(seed=int(states[2]))
        out = self.transforms(array)
        return torch.as_tensor(np.asarray(out), dtype=torch.float32)
