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

LeCL (lesion-aware views): with ``lesion_views``, a slice with a lesion box (the slices table's
``boxes`` of the chosen labels, any label > 0 by default) gets as view 1 a crop centred on the
centre of one of its boxes (random size and ratio, shifted to lie inside the slice, resized to
the slice shape: :func:`centred_crop_box`) and as view 2 the whole slice; both then get their
view's flip, jitter, blur and noise. Other slices get two random resized crops as usual.

CT windows: ``windows`` re-window the stored values to HU windows (:mod:`radlens.data.windows`),
as the channels of one image (``window_mode="channels"``) or as separate one-channel items
(``"samples"``: item ``i`` is slice ``i // W`` in window ``i % W``).

2D datasets only: prepare volumes as slices with ``radlens prepare --dims 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.data.augment import KEY, apply_augment, item_seed
from radlens.data.windows import apply_windows, window_coefficients
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset, parse_boxes

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose


@dataclass
class ViewConfig:
    """How one view of a slice is drawn (probabilities are per view).

    Attributes:
        crop_scale: range of the random crop's area as a fraction of the slice (resized back, bilinear).
        crop_ratio: range of the crop's width/height ratio (drawn log-uniform).
        flip_prob: probability of a left-right flip (the image's width axis: patient left-right in the
            prepared axial and coronal display orientation).
        jitter_prob: probability of each of the brightness and contrast jitters.
        brightness: intensities are multiplied by 1 + U(-brightness, brightness).
        contrast: intensities are scaled about the slice mean by 1 + U(-contrast, contrast).
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's sigma in pixels, drawn per axis.
        noise_prob: probability of additive Gaussian noise.
        noise_std: standard deviation of that noise, in prepared intensity units.
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


@dataclass
class MocoDataConfig:
    """How views are drawn and batches formed for MoCo / LeCL; the prepared 2D dataset is the command's
    DATA argument.

    Attributes:
        batch_size: slices per training batch on each device.
        eval_batch_size: slices per validation batch (default: batch_size).
        num_workers: DataLoader worker processes (0: load in the training process).
        sampler: random; balanced (half of every global batch lesion slices, half others, when both
            exist); distinct_series (at most one slice per series in a global batch: neighbouring
            slices are near-duplicates, false negatives).
        windows: CT HU windows [[low, high], ...] cut from the stored values (each inside the range the
            dataset was prepared with), each to [0, 1]; none: the stored values (MRI always).
        window_mode: channels stacks the windows as the image's channels (the encoder gets one input
            channel per window); samples makes each (slice, window) its own item.
        lesion_views: LeCL: a lesion slice's first view is a crop centred on its lesion box, the second
            the whole slice.
        lesion_labels: label ids that count as lesion (none: any label > 0 of the masks, or the
            lesion column).
        lesion_scale: area range of the lesion-centred crop as a fraction of the slice.
        val_augment: draw validation pairs like training pairs (fixed seeds); false gives the stored
            slice twice (a near-trivial val/loss).
        view: augmentation of the first view (MoCo v3: always blurred).
        view2: augmentation of the second view (MoCo v3: rarely blurred).
    """

    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    sampler: Literal["random", "balanced", "distinct_series"] = "random"
    windows: list[tuple[float, float]] | None = None
    window_mode: Literal["channels", "samples"] = "channels"
    lesion_views: bool = False
    lesion_labels: list[int] | None = None
    lesion_scale: tuple[float, float] = (0.05, 0.3)
    val_augment: bool = True
    view: ViewConfig = field(default_factory=lambda: ViewConfig(blur_prob=1.0))
    view2: ViewConfig = field(default_factory=lambda: ViewConfig(blur_prob=0.1))

    def __post_init__(self) -> None:
        lo, hi = self.lesion_scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.lesion_scale must satisfy 0 < low <= high <= 1, got {self.lesion_scale}")
        if self.windows is not None and not self.windows:
            raise ConfigError("data.windows: give at least one [low, high] window, or leave it unset")


def centred_crop_box(shape: tuple[int, int], centre: tuple[float, float], scale: tuple[float, float],
                     ratio: tuple[float, float], rng: np.random.RandomState) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a crop centred on ``centre`` (row, column in pixel-edge
    coordinates: a box ``[r0, r1)`` has centre ``(r0 + r1) / 2``) with area fraction drawn from
    ``scale`` and width/height from ``ratio`` (log-uniform), cut to the slice and shifted to lie
    inside it; the shifted crop still contains ``centre`` (for a centre inside the slice)."""
    height, width = shape
    target = height * width * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    w = min(width, max(1, round(math.sqrt(target * aspect))))
    h = min(height, max(1, round(math.sqrt(target / aspect))))
    top = min(max(round(centre[0] - h / 2), 0), height - h)
    left = min(max(round(centre[1] - w / 2), 0), width - w)
    return int(top), int(left), int(h), int(w)


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
    """One view: a random resized crop (:func:`crop_box`, or :func:`centred_crop_box` around
    ``centre``; resized bilinearly back to the slice shape), then :func:`build_view`'s MONAI
    transforms; all random state from one seed. :meth:`whole` skips the crop."""

    def __init__(self, cfg: ViewConfig) -> None:
        self.cfg, self.rest = cfg, build_view(cfg)

    def __call__(self, image: torch.Tensor, seed: int, centre: tuple[float, float] | None = None,
                 scale: tuple[float, float] | None = None) -> torch.Tensor:
        import torch.nn.functional as F

        rng = np.random.RandomState(seed)
        shape = (int(image.shape[-2]), int(image.shape[-1]))
        if centre is None:
            top, left, h, w = crop_box(shape, self.cfg.crop_scale, self.cfg.crop_ratio, rng)
        else:
            top, left, h, w = centred_crop_box(shape, centre, scale or self.cfg.crop_scale, self.cfg.crop_ratio, rng)
        crop = image[None, :, top : top + h, left : left + w]
        resized = F.interpolate(crop, size=shape, mode="bilinear", align_corners=False)[0]
        return apply_augment(self.rest, resized, int(rng.randint(2**32, dtype=np.uint64)))

    def whole(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """The whole slice through the view's flip, jitter, blur and noise (no crop)."""
        rng = np.random.RandomState(seed)
        return apply_augment(self.rest, image, int(rng.randint(2**32, dtype=np.uint64)))


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """The 32-bit seed of one view of one item: view 0 is ``item_seed``, view 1 its own stream."""
    if view == 0:
        return item_seed(seed, epoch, index)
    return int(np.random.SeedSequence([seed, epoch, index, view]).generate_state(1)[0])


class TwoViewDataset:
    """One split of a 2D prepared dataset as ``{"view1", "view2", "index", "series_id", "patient_id", "lesion"}``.

    Views are ``(C, H, W)`` float32 with ``(H, W)`` the slice shape and ``C`` 1 (or the number of
    ``windows`` in ``channels`` mode); ``lesion`` is the slices table's lesion flag (1/0, -1
    unknown) or, with ``lesion_labels``, whether the slice's ``labels_present`` holds one of them
    (-1 without a mask). ``view2`` (default: ``view``) lets the two views be drawn differently
    (MoCo v3's asymmetric blur). ``lesion_views``, ``lesion_scale``, ``windows`` and
    ``window_mode``: the module docstring. The dataset refuses 3D datasets: slice the volumes
    first with ``radlens prepare --dims 2``.
    """

    def __init__(self, prepared: PreparedDataset | str | Path, split: str, view: ViewConfig | None = None, seed: int = 0,
                 view2: ViewConfig | None = None, *, lesion_views: bool = False, lesion_labels: Sequence[int] | None = None,
                 lesion_scale: tuple[float, float] = (0.05, 0.3), windows: Sequence[Sequence[float]] | None = None,
                 window_mode: Literal["channels", "samples"] = "channels") -> None:
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
        self.lesion_views, self.lesion_scale = lesion_views, tuple(lesion_scale)
        if lesion_labels is not None:
            self.lesions = _label_flags(self.table, lesion_labels)
        self.boxes = self._lesion_boxes(lesion_labels) if lesion_views else [[] for _ in range(len(self.table))]
        if window_mode not in ("channels", "samples"):
            raise ConfigError(f"window_mode must be 'channels' or 'samples', got {window_mode!r}")
        self.windows = None if windows is None else [tuple(float(x) for x in w) for w in windows]
        self.window_mode = window_mode
        self.coefficients = (None if windows is None
                             else window_coefficients(self.prepared.card, windows, self.prepared.path / "dataset.json"))
        self.channels = len(self.windows) if self.windows is not None and window_mode == "channels" else 1
        # Item -> (slice, window): one item per slice, or one per (slice, window) in samples mode.
        per_slice = len(self.windows) if self.windows is not None and window_mode == "samples" else 1
        self.item_slice = np.repeat(np.arange(len(self.table)), per_slice)
        self.item_window = np.tile(np.arange(per_slice), len(self.table))
        if per_slice > 1:
            self.series_ids = [self.series_ids[s] for s in self.item_slice]
            self.patient_ids = [self.patient_ids[s] for s in self.item_slice]
            self.lesions = self.lesions[self.item_slice]

    def _lesion_boxes(self, labels: Sequence[int] | None) -> list[list[tuple[int, int, int, int]]]:
        """Per slice, the boxes of the chosen labels (any label > 0 when None); InputError for a box
        outside the slice."""
        shape = tuple(int(s) for s in (self.prepared.card.get("array_shape") or ()))
        cells = self.table["boxes"].tolist() if "boxes" in self.table.columns else [None] * len(self.table)
        wanted = None if labels is None else {int(x) for x in labels}
        out: list[list[tuple[int, int, int, int]]] = []
        for i, cell in enumerate(cells):
            boxes = [b for label, b in parse_boxes(cell).items() if label > 0 and (wanted is None or label in wanted)]
            for b in boxes:
                if len(b) != 4 or not (0 <= b[0] < b[2] and 0 <= b[1] < b[3]) or (len(shape) == 2 and (b[2] > shape[0] or b[3] > shape[1])):
                    raise InputError(self.prepared.path / "slices.parquet",
                                     f"slice {self.table['slice_id'].iat[i]!r}: lesion box {list(b)} is not [r0, c0, r1, c1] "
                                     f"inside the {'x'.join(map(str, shape))} slice")
            out.append([(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in boxes])
        return out

    def __len__(self) -> int:
        return len(self.item_slice)

    def image(self, i: int) -> np.ndarray:
        """Item ``i``'s image as ``(C, H, W)`` float32: the stored slice (a writable copy of the memory
        map), or its windows."""
        s = int(self.item_slice[i])
        if self.coefficients is None:
            return np.array(self.prepared.slice(int(self.rows[s]))[None], dtype=np.float32)
        coefficients = self.coefficients if self.window_mode == "channels" else self.coefficients[[self.item_window[i]]]
        return apply_windows(self.prepared.slice(int(self.rows[s])), coefficients)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        index, epoch = (int(key), None) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        image = torch.from_numpy(self.image(index))
        boxes = self.boxes[int(self.item_slice[index])]
        if epoch is None:
            views = (image, image.clone())
        elif self.lesion_views and boxes:
            # LeCL: a crop centred on one lesion box (chosen from the item's own stream) vs the whole slice.
            pick = np.random.RandomState(view_seed(self.seed, epoch, index, 2)).randint(len(boxes))
            r0, c0, r1, c1 = boxes[pick]
            centre = ((r0 + r1) / 2, (c0 + c1) / 2)
            views = (self.transforms[0](image, view_seed(self.seed, epoch, index, 0), centre, self.lesion_scale),
                     self.transforms[1].whole(image, view_seed(self.seed, epoch, index, 1)))
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


def _label_flags(table: Any, labels: Sequence[int]) -> np.ndarray:
    """1 if a slice's ``labels_present`` holds one of ``labels``, 0 if not, -1 without a mask."""
    cells = table["labels_present"].tolist() if "labels_present" in table.columns else [None] * len(table)
    wanted = {int(x) for x in labels}
    return np.asarray([-1 if cell is None or isinstance(cell, float) else int(bool(wanted & {int(x) for x in cell}))
                       for cell in cells], dtype=np.int64)


def collate_views(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the views of :class:`TwoViewDataset` items: ``view1``/``view2`` (B, C, H, W), ``index``
    and ``lesion`` (B,), ``series_id`` and ``patient_id`` lists."""
    import torch

    return {
        "view1": torch.stack([it["view1"] for it in items]),
        "view2": torch.stack([it["view2"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "lesion": torch.tensor([it["lesion"] for it in items], dtype=torch.long),
        "series_id": [it["series_id"] for it in items],
        "patient_id": [it["patient_id"] for it in items],
    }
