"""Image + mask + prompt items over a prepared 2D dataset, for the generative pipeline (VAE, LDM, ControlNet).

An item is ``{"image": (1, H, W) float32, "mask": (1, H, W) int64, "prompt": str, "index": int}``,
built on :class:`radlens.data.masks.ImageMaskDataset` (which reads the image with its label map and
moves both under augmentation). Which slices become items, and how, is a list of
:class:`ItemSource`, one per kind of item, concatenated:

- ``any``: every slice (of the chosen contrast classes), with its mask when its series has one (-1
  everywhere otherwise) and the structures present named in the prompt (VAE and text-to-image LDM);
- ``masked``: only slices whose series has a mask, mask and structures kept (ControlNet source modality);
- ``empty``: every slice, mask all background and no structures in the prompt (ControlNet target
  modality: MRGen's unpaired recipe teaches the ControlNet that an empty mask means "no layout").

Training keys are ``(index, epoch)``: prompt dropout (the prompt replaced by "" with probability
``prompt_dropout``, for classifier-free guidance) is drawn from ``(seed, epoch, index)``, so a
resumed run drops the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.data.augment import AugmentConfig
from radlens.data.masks import ImageMaskDataset
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset

if TYPE_CHECKING:
    from radlens.data.generation_prompts import PromptBuilder

MaskMode = Literal["any", "masked", "empty"]


@dataclass(frozen=True)
class ItemSource:
    """One kind of item: the slices of these contrast classes (None: all) and what their mask is."""

    contrasts: tuple[str, ...] | None = None
    masks: MaskMode = "any"


def contrast_of(prepared: PreparedDataset) -> dict[str, str]:
    """series_id -> contrast class ("" where missing); ConfigError without a ``contrast`` column."""
    series = prepared.series
    if "contrast" not in series.columns:
        raise ConfigError(f"{prepared.path} has no 'contrast' column in series.parquet: items cannot be chosen by contrast class")
    return dict(zip(series["series_id"], series["contrast"].fillna("").astype(str)))


class GenerationDataset:
    """One split of a prepared 2D dataset as image + mask + prompt items from ``sources`` (see the module docstring).

    ``prompts`` (None: every prompt is "") writes the prompts. ``require_each`` makes a source without
    items in this split an InputError (training); otherwise it is left out (validation may lack some).
    """

    def __init__(
        self,
        prepared: PreparedDataset | str,
        split: str,
        sources: Sequence[ItemSource] = (ItemSource(),),
        prompts: PromptBuilder | None = None,
        prompt_dropout: float = 0.0,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        require_each: bool = True,
    ) -> None:
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
        if self.prepared.dims != 2:
            raise InputError(self.prepared.path, "the generative pipeline works on 2D slices: prepare the dataset with dims 2")
        if not 0.0 <= prompt_dropout < 1.0:
            raise ConfigError(f"prompt dropout must be in [0, 1), got {prompt_dropout}")
        self.split, self.sources, self.prompts = split, tuple(sources), prompts
        self.prompt_dropout, self.seed = prompt_dropout, seed
        self._bases: dict[bool, ImageMaskDataset] = {}
        self.items: list[tuple[int, int]] = []  # (source, position in its base dataset)
        self.series_ids: list[str] = []
        self.patient_ids: list[str] = []
        for s, source in enumerate(self.sources):
            base = self._base(source.masks == "masked", augment, seed)
            positions = self._positions(base, source) if base is not None else np.zeros(0, np.int64)
            if len(positions) == 0 and require_each:
                raise InputError(self.prepared.path, f"no {split} slices for {self._describe(source)}{self._available()}")
            self.items += [(s, int(p)) for p in positions]
            if base is not None:
                self.series_ids += base.table["series_id"].iloc[positions].astype(str).tolist()
                self.patient_ids += base.table["patient_id"].iloc[positions].astype(str).tolist()
        if prompts is not None:
            prompts.check(self.series_ids)

    def _base(self, masked_only: bool, augment: AugmentConfig | None, seed: int) -> ImageMaskDataset | None:
        """The image + mask dataset of this split (only slices with a mask when ``masked_only``); None when empty."""
        if masked_only not in self._bases:
            table = self.prepared.slices
            assert table is not None
            chosen = (table["split"] == self.split).to_numpy(dtype=bool)
            if masked_only:
                has_mask = table["mask_path"].fillna("") != "" if "mask_path" in table.columns else False
                chosen = chosen & np.asarray(has_mask, dtype=bool)
            if not chosen.any():
                return None
            self._bases[masked_only] = ImageMaskDataset(self.prepared, self.split, augment, seed, masked_only=masked_only)
        return self._bases[masked_only]

    def _positions(self, base: ImageMaskDataset, source: ItemSource) -> np.ndarray:
        if source.contrasts is None:
            return np.arange(len(base))
        contrast = contrast_of(self.prepared)
        wanted = set(source.contrasts)
        return np.flatnonzero([contrast.get(str(sid), "") in wanted for sid in base.table["series_id"]])

    def _describe(self, source: ItemSource) -> str:
        which = "every contrast" if source.contrasts is None else f"contrast {', '.join(source.contrasts)}"
        return f"{which} ({'with a mask' if source.masks == 'masked' else 'any slice'})"

    def _available(self) -> str:
        if "contrast" not in self.prepared.series.columns:
            return ""
        found = sorted(set(self.prepared.series["contrast"].dropna().astype(str)))
        return f"; contrast classes in the dataset: {', '.join(found) or 'none'}"

    def __len__(self) -> int:
        return len(self.items)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = self.prepared.card.get("array_shape")
        if shape is None:
            raise InputError(self.prepared.path, "slices of different shapes (card array_shape is null): a batch needs one shape")
        return tuple(int(s) for s in shape)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        index, epoch = (key, None) if isinstance(key, (int, np.integer)) else key
        index = int(index)
        s, position = self.items[index]
        source = self.sources[s]
        base = self._bases[source.masks == "masked"]
        item = base[position] if epoch is None else base[(position, int(epoch))]
        mask = item["mask"]
        present: list[int] = []
        if source.masks == "empty":
            mask = torch.zeros_like(mask)
        else:
            present = np.flatnonzero(item["labels_present"].numpy()).tolist()
        prompt = "" if self.prompts is None else self.prompts.prompt(self.series_ids[index], present)
        if epoch is not None and self.prompt_dropout > 0:
            if np.random.default_rng([self.seed, int(epoch), index, 1]).random() < self.prompt_dropout:
                prompt = ""
        return {"image": item["image"], "mask": mask, "prompt": prompt, "index": index}
