"""Image + label-map items over a prepared dataset: one item holds both (TorchIO's ``Subject`` idea).

An item of :class:`ImageMaskDataset` is a dict: ``image`` (``(1, *spatial)`` float32), ``mask``
(``(1, *spatial)`` int64 label ids, 0 = background; -1 everywhere for an item without a mask when
those are kept), ``labels_present`` (``(K,)`` bool over label ids ``0..K-1``, id 0 never set),
``boxes`` (``(K, 2 * ndim)`` int64 half-open ``[lo..., hi...]`` voxel bounds in the array's index
order, -1 for labels not present) and ``index``. ``K`` is one more than the largest id of the
dataset's label table, so items collate with the default collate function.

A key is an index (no augmentation) or ``(index, epoch)`` (training: the spatial augmentation runs
on image and mask together, bilinear for the image and nearest for the mask, seeded from
``(seed, epoch, index)``; presence and boxes are then recomputed from the augmented mask).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.data.augment import AugmentConfig, build_augment, item_seed
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset, parse_boxes
from radlens.prepare.masks import label_boxes

if TYPE_CHECKING:
    import torch
    from monai.transforms import Compose



def apply_pair_augment(
    transform: Compose, image: torch.Tensor, mask: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``transform`` on an image and its int64 mask with the random state set from ``seed``."""
    import torch

    transform.set_random_state(seed=seed)
    out = transform({"image": image, "mask": mask.to(torch.float32)})
    image = torch.as_tensor(out["image"]).as_subclass(torch.Tensor).to(torch.float32)
    mask = torch.as_tensor(out["mask"]).as_subclass(torch.Tensor).round().to(torch.int64)
    return image, mask


class ImageMaskDataset:
    """One split of a prepared dataset as image + label-map items (2D slices or 3D volumes, per the card).

    ``masked_only`` keeps only the items whose series has a mask (default); otherwise an item
    without one gets a mask of -1 (unknown, e.g. a loss's ``ignore_index``). ``series_ids`` keeps only
    the items of those series (e.g. one contrast class). ``intensity(image, mask, seed) -> image``
    (e.g. :class:`radlens.data.intensity_augment.IntensityAugment`) runs on training keys after the
    spatial augmentation, seeded from ``(seed, epoch, index)`` like it.
    """

    def __init__(
        self,
        prepared: PreparedDataset | str,
        split: str,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        masked_only: bool = True,
        series_ids: Collection[str] | None = None,
        intensity: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    ) -> None:
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
        self.split, self.seed, self.intensity = split, seed, intensity
        table = self.prepared.slices if self.prepared.dims == 2 else self.prepared.series
        if table is None:
            raise InputError(self.prepared.path, "a 2D dataset without slices.parquet")
        if masked_only and "mask_path" not in table.columns:
            raise InputError(self.prepared.path, "prepared without masks (no mask_path column); prepare it again")
        chosen = (table["split"] == split).to_numpy(dtype=bool)
        if masked_only:
            chosen = chosen & (table["mask_path"].fillna("") != "").to_numpy(dtype=bool)
        if series_ids is not None:
            chosen = chosen & table["series_id"].isin(list(series_ids)).to_numpy(dtype=bool)
        self.rows = np.flatnonzero(chosen)
        if len(self.rows) == 0:
            which = ("with a mask " if masked_only else "") + ("of the chosen series " if series_ids is not None else "")
            raise InputError(self.prepared.path, f"no items {which}in split {split!r}")
        self.table = table.iloc[self.rows].reset_index(drop=True)
        labels = self.prepared.labels
        self.num_labels = max(labels) + 1 if labels else 1
        self.transform = None
        if augment is not None:
            self.transform = build_augment(augment, self.spatial_shape, masks=("mask",))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = self.prepared.card.get("array_shape")
        if shape is None:
            raise ConfigError(f"{self.prepared.path}: arrays of different shapes; augmentation needs one shape")
        return tuple(int(s) for s in shape)

    def __len__(self) -> int:
        return len(self.table)

    def image(self, i: int) -> np.ndarray:
        """The stored image of item ``i`` with a channel axis, as float32 (a writable copy)."""
        if self.prepared.dims == 2:
            return np.array(self.prepared.slice(int(self.rows[i]))[None], dtype=np.float32)
        return np.array(self.prepared.array(self.table["series_id"].iat[i]), dtype=np.float32)

    def mask(self, i: int) -> np.ndarray | None:
        """The label map of item ``i`` with a channel axis, as int64, or None without one."""
        if self.prepared.dims == 2:
            found = self.prepared.slice_mask(int(self.rows[i]))
            return None if found is None else np.array(found[None], dtype=np.int64)
        found = self.prepared.mask(self.table["series_id"].iat[i])
        return None if found is None else np.array(found, dtype=np.int64)

    def _targets(self, boxes: dict[int, Sequence[int]], ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        present = torch.zeros(self.num_labels, dtype=torch.bool)
        table = torch.full((self.num_labels, 2 * ndim), -1, dtype=torch.int64)
        for label, box in boxes.items():
            if 0 < label < self.num_labels:
                present[label] = True
                table[label] = torch.tensor(list(box), dtype=torch.int64)
        return present, table

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        index, epoch = (key, None) if isinstance(key, (int, np.integer)) else key
        index = int(index)
        image = torch.from_numpy(self.image(index))
        found = self.mask(index)
        mask = torch.from_numpy(found) if found is not None else torch.full(image.shape, -1, dtype=torch.int64)
        boxes = parse_boxes(self.table["boxes"].iat[index]) if found is not None else {}
        if epoch is not None and self.transform is not None:
            image, mask = apply_pair_augment(self.transform, image, mask, item_seed(self.seed, int(epoch), index))
            if found is None:
                mask = torch.full(image.shape, -1, dtype=torch.int64)
            else:
                boxes = label_boxes(mask[0].numpy())
        if epoch is not None and self.intensity is not None:
            image = self.intensity(image, mask, item_seed(self.seed, int(epoch), index))
        present, table = self._targets(boxes, image.ndim - 1)
        return {"image": image, "mask": mask, "labels_present": present, "boxes": table, "index": index}
