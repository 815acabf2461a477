"""Light per-sample training augmentations (MONAI dictionary transforms), seeded per item.

Each item's random state comes from ``(seed, epoch, index)`` alone, set on the transform right
before it runs, so a sample is the same whichever DataLoader worker draws it and however many
workers there are; an interrupted run resumed at the same step sees the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose


KEY = "image"


@dataclass
class AugmentConfig:
    """Light per-sample MONAI augmentations (train split only); probabilities are per sample.

    Attributes:
        enabled: augment training samples at all (validation and test never are).
        flip_prob: probability of a left-right flip (the first spatial axis, X in RAS).
        affine_prob: probability of a small random affine (rotation, scaling, translation).
        rotate_degrees: largest rotation of the affine, in degrees (in-plane in 2D, about each axis in 3D).
        scale: largest relative scaling of the affine (0.1: 90-110%).
        translate_fraction: largest shift of the affine as a fraction of the image size per axis.
        intensity_prob: probability of each of the intensity scale and shift.
        intensity_scale: largest relative intensity scaling (0.1: x0.9-1.1).
        intensity_shift: largest intensity offset, in prepared intensity units.
        noise_prob: probability of additive Gaussian noise.
        noise_std: standard deviation of that noise, in prepared intensity units.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    affine_prob: float = 0.3
    rotate_degrees: float = 10.0
    scale: float = 0.1
    translate_fraction: float = 0.05
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    noise_prob: float = 0.1
    noise_std: float = 0.02


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one item of one epoch (NumPy's SeedSequence mixes the three well)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def build_augment(cfg: AugmentConfig, spatial_shape: Sequence[int], masks: Sequence[str] = ()) -> Compose | None:
    """The augmentation pipeline for images of ``spatial_shape`` (2D or 3D), or None when disabled.

    Left-right flip on the first spatial axis (X in RAS), a small random affine (rotation,
    isotropic-ish scaling, translation as a fraction of the size), intensity scale/shift and
    Gaussian noise. Values stay in the prepared intensity range apart from the intensity jitter.
    ``masks`` names label maps in the same item: flip and affine move them with the same random
    draw (nearest neighbour, zero = background padding); the intensity changes leave them alone.
    """
    if not cfg.enabled:
        return None
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    dims = len(spatial_shape)
    angle = math.radians(cfg.rotate_degrees)
    # A 2D affine rotates in-plane only; a 3D one gets a small rotation about every axis.
    rotate = (angle,) if dims == 2 else (angle, angle, angle)
    spatial_keys = (KEY, *masks)
    transforms = [
        RandFlipd(keys=spatial_keys, prob=cfg.flip_prob, spatial_axis=0),
        RandAffined(
            keys=spatial_keys,
            prob=cfg.affine_prob,
            rotate_range=rotate,
            scale_range=(cfg.scale,) * dims,
            translate_range=tuple(cfg.translate_fraction * s for s in spatial_shape),
            mode=("bilinear", *("nearest",) * len(masks)) if masks else "bilinear",
            padding_mode="zeros",
        ),
        RandScaleIntensityd(keys=KEY, factors=cfg.intensity_scale, prob=cfg.intensity_prob),
        RandShiftIntensityd(keys=KEY, offsets=cfg.intensity_shift, prob=cfg.intensity_prob),
        RandGaussianNoised(keys=KEY, prob=cfg.noise_prob, std=cfg.noise_std),
    ]
    return Compose(transforms)


def apply_augment(transform: Compose, image: torch.Tensor, seed: int) -> torch.Tensor:
    """Run ``transform`` on a channel-first image with its random state set from ``seed``."""
    import torch

    transform.set_random_state(seed=seed)
    out = transform({KEY: image})[KEY]
    # MONAI returns a MetaTensor; a plain tensor keeps collation and pickling simple.
    return torch.as_tensor(out).as_subclass(torch.Tensor).to(torch.float32)
