"""Two augmented views of one 2D slice (MoCo v3 / SimCLR style) from a prepared dataset.

Each view is a random resized crop of the slice (an area fraction and an aspect ratio, as
torchvision's ``RandomResizedCrop``, resized back to the slice shape), a horizontal flip,
intensity jitter (brightness: scale; contrast: scale about the mean), Gaussian blur and
Gaussian noise: MONAI dictionary transforms after the crop (the crop box is drawn here, since
MONAI's random crops draw each side independently rather than an area and a ratio).
Intensities are not clipped back into the prepared range after jitter and noise.

Random state: with a training key ``(index, epoch)`` (from
:class:`radlens.data.samplers.ClipBatchSampler`) view 1 is seeded from
``item_seed(seed, epoch, index)`` and view 2 from a separate stream
``SeedSequence([seed, epoch, index, 1])``, so a sample is the same whichever worker draws it
and a resumed run sees exactly the samples the interrupted one would have. An evaluation key (a
plain index) gives the stored slice, unaugmented, as both views.

2D datasets only: prepare volumes as slices with ``radlens prepare --dims 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.data.augment import KEY, apply_augment, item_seed
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose


@dataclass
class ViewConfig:
    """How one view of a slice is drawn (probabilities are per view).

    ``crop_scale``: range of the crop's area as a fraction of the slice; ``crop_ratio``: range of
    its width/height ratio (log-uniform); the crop is resized (bilinear) to the slice shape.
    ``flip_prob``: left-right flip (the image's width axis: patient left-right in the prepared
    axial and coronal display orientation). ``jitter_prob``: each of brightness (intensities
    times ``1 + U(-brightness, brightness)``) and contrast (scaled about the slice mean by
    ``1 + U(-contrast, contrast)``). ``blur_prob`` / ``blur_sigma``: Gaussian blur with sigma in
    pixels drawn per axis from the range. ``noise_prob`` / ``noise_std``: additive Gaussian noise
    (in the prepared intensity units).
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_prob: float = 0.2
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"view crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ConfigError(f"view crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        for name in ("flip_prob", "jitter_prob", "blur_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"view {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.brightness < 1 or not 0 <= self.contrast < 1:
            raise ConfigError(f"view brightness and contrast must be in [0, 1), got {self.brightness}, {self.contrast}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1] or self.noise_std < 0:
            raise ConfigError(f"view blur_sigma must satisfy 0 < low <= high and noise_std >= 0, "
                              f"got {self.blur_sigma}, {self.noise_std}")


def crop_box(shape: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.RandomState) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a crop with area fraction in ``scale`` and width/height in
    ``ratio`` (log-uniform), torchvision's ``RandomResizedCrop`` rule: ten tries, then the
    centred crop of the largest ratio that fits."""
    height, width = shape
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.randint(0, height - h + 1)), int(rng.randint(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def build_view(cfg: ViewConfig) -> Compose:
    """The MONAI pipeline of one view after its crop: flip, intensity jitter, blur, noise on ``(1, H, W)``."""
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
    )

    return Compose([
        RandFlipd(keys=KEY, prob=cfg.flip_prob, spatial_axis=1),
        RandScaleIntensityd(keys=KEY, factors=cfg.brightness, prob=cfg.jitter_prob),
        RandScaleIntensityFixedMeand(keys=KEY, factors=cfg.contrast, prob=cfg.jitter_prob),
        RandGaussianSmoothd(keys=KEY, sigma_x=cfg.blur_sigma, sigma_y=cfg.blur_sigma, prob=cfg.blur_prob),
        RandGaussianNoised(keys=KEY, prob=cfg.noise_prob, std=cfg.noise_std),
    ])


class ViewTransform:
    """One view: a random resized crop (:func:`crop_box`, resized bilinearly back to the slice
    shape), then :func:`build_view`'s MONAI transforms; all random state from one seed."""

    def __init__(self, cfg: ViewConfig) -> None:
        self.cfg, self.rest = cfg, build_view(cfg)

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        import torch.nn.functional as F

        rng = np.random.RandomState(seed)
        shape = (int(image.shape[-2]), int(image.shape[-1]))
        top, left, h, w = crop_box(shape, self.cfg.crop_scale, self.cfg.crop_ratio, rng)
        crop = image[None, :, top : top + h, left : left + w]
        resized = F.interpolate(crop, size=shape, mode="bilinear", align_corners=False)[0]
        return apply_augment(self.rest, resized, int(rng.randint(2**32, dtype=np.uint64)))


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """The 32-bit seed of one view of one item: view 0 is ``item_seed``, view 1 its own stream."""
    if view == 0:
        return item_seed(seed, epoch, index)
    return int(np.random.SeedSequence([seed, epoch, index, view]).generate_state(1)[0])


class TwoViewDataset:
    """One split of a 2D prepared dataset as ``{"view1", "view2", "index", "series_id", "patient_id", "lesion"}``.

    Views are ``(1, H, W)`` float32 with ``(H, W)`` the slice shape; ``lesion`` is the slices
    table's lesion flag (1/0, -1 unknown). ``view2`` (default: ``view``) lets the two views be
    drawn differently (MoCo v3's asymmetric blur). The dataset refuses 3D datasets: slice the
    volumes first with ``radlens prepare --dims 2``.
    """

    def __init__(self, prepared: PreparedDataset | str | Path, split: str, view: ViewConfig | None = None, seed: int = 0,
                 view2: ViewConfig | None = None) -> None:
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
        if self.prepared.dims != 2:
            raise InputError(self.prepared.path, f"two views of a slice need a 2D dataset, not dims {self.prepared.dims}:"
                                                 " cut the volumes into slices with `radlens prepare --dims 2`")
        table = self.prepared.slices
        if table is None:
            raise InputError(self.prepared.path, "a 2D dataset without slices.parquet")
        self.rows = np.flatnonzero((table["split"] == split).to_numpy())
        if len(self.rows) == 0:
            raise InputError(self.prepared.path, f"no slices in split {split!r}")
        self.split, self.seed = split, seed
        self.table = table.iloc[self.rows].reset_index(drop=True)
        self.series_ids = self.table["series_id"].astype(str).tolist()
        self.patient_ids = (self.table["patient_id"].astype(str).tolist() if "patient_id" in self.table.columns
                            else [""] * len(self.table))
        self.lesions = (self.table["lesion"].fillna(-1).astype(np.int64).to_numpy() if "lesion" in self.table.columns
                        else np.full(len(self.table), -1, dtype=np.int64))
        self.view_cfgs = (view or ViewConfig(), view2 or view or ViewConfig())
        self.transforms = (ViewTransform(self.view_cfgs[0]), ViewTransform(self.view_cfgs[1]))

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int) -> np.ndarray:
        """The stored slice of item ``i`` as ``(1, H, W)`` float32 (a writable copy of the memory map)."""
        return np.array(self.prepared.slice(int(self.rows[i]))[None], dtype=np.float32)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        index, epoch = (int(key), None) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        image = torch.from_numpy(self.image(index))
        if epoch is None:
            views = (image, image.clone())
        else:
            views = tuple(t(image, view_seed(self.seed, epoch, index, v)) for v, t in enumerate(self.transforms))
        return {
            "view1": views[0],
            "view2": views[1],
            "index": index,
            "series_id": self.series_ids[index],
            "patient_id": self.patient_ids[index],
            "lesion": int(self.lesions[index]),
        }


def collate_views(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the views of :class:`TwoViewDataset` items: ``view1``/``view2`` (B, 1, H, W), ``index``
    and ``lesion`` (B,), ``series_id`` a list."""
    import torch

    return {
        "view1": torch.stack([it["view1"] for it in items]),
        "view2": torch.stack([it["view2"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "lesion": torch.tensor([it["lesion"] for it in items], dtype=torch.long),
        "series_id": [it["series_id"] for it in items],
    }
