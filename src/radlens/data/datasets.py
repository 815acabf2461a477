"""Image-text datasets over a prepared dataset folder, and the collate function that tokenises.

2D datasets read one slice per item from ``slices.parquet`` + the memory-mapped series arrays;
3D datasets read one volume per item from ``series.parquet``. An item is a dict with
``image`` (``(1, H, W)`` or ``(1, X, Y, Z)`` float32), ``text``, ``label`` (protocol id, -1 if
none), ``times`` (TE, TR, TI in seconds, NaN when missing), ``findings`` (the card's finding
labels as a multi-hot vector, empty when the dataset has none) and ``index``.

A key is an index (evaluation: no augmentation, stored text) or ``(index, epoch)`` from
:class:`radlens.data.samplers.ClipBatchSampler` (training: augmentation and caption field
dropout (metadata captions) or sentence dropout (reports) seeded from ``(seed, epoch, index)``).
Caption dropout re-renders a series' caption from its typed metadata columns and the card's caption
config, so it is refused (ConfigError) unless every stored caption is exactly that rendering.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.data.augment import AugmentConfig, apply_augment, build_augment, item_seed
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.prepare.captions import CaptionConfig

TIME_COLUMNS = ("EchoTime", "RepetitionTime", "InversionTime")


@dataclass
class ClipDataConfig:
    """Which text and how batches are drawn; the prepared dataset is the command's DATA argument.

    Attributes:
        text_column: the text paired with each image: text (caption or full report) or a report section
            column such as report_findings.
        eval_text_column: the text column for validation/test (default: text_column).
        caption_dropout: metadata-caption datasets: re-render each training caption blanking each
            acquisition field with this probability (MR-CLIP style robustness to missing fields).
        sentence_dropout: report datasets: leave each sentence of a training report out with this
            probability, so the model ties sentences rather than whole reports to images.
        batch_size: items per training batch on each device (the contrastive loss sees all devices').
        eval_batch_size: items per validation batch (default: batch_size).
        num_workers: DataLoader worker processes (0: load in the training process).
        sampler: random, or distinct_series / distinct_label to keep at most one item per series / per
            protocol label in a batch (fewer false negatives for the contrastive loss).
        augment: training augmentation of the images.
    """

    text_column: str = "text"
    eval_text_column: str | None = None
    caption_dropout: float = 0.0
    sentence_dropout: float = 0.0
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    sampler: Literal["random", "distinct_series", "distinct_label"] = "random"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class ClipDataset:
    """One split of a prepared dataset as image-text items (2D slices or 3D volumes, per the card)."""

    def __init__(
        self,
        prepared: PreparedDataset | str,
        split: str,
        text_column: str = "text",
        augment: AugmentConfig | None = None,
        caption_dropout: float = 0.0,
        seed: int = 0,
        sentence_dropout: float = 0.0,
    ) -> None:
        self.prepared = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
        self.split, self.text_column, self.seed = split, text_column, seed
        self.caption_dropout, self.sentence_dropout = caption_dropout, sentence_dropout
        self.table, self.rows = _split_table(self.prepared, split, text_column)
        self.texts: list[str] = self.table[text_column].fillna("").astype(str).tolist()
        self.labels = self.table["label"].fillna(-1).astype(np.int64).to_numpy() if "label" in self.table else np.full(len(self.table), -1)
        self.times = np.stack(
            [self.table[c].astype(np.float64).to_numpy() if c in self.table else np.full(len(self.table), np.nan) for c in TIME_COLUMNS],
            axis=1,
        ).astype(np.float32)
        finding_columns = list(self.prepared.card.get("findings", []))
        missing = [f for f in finding_columns if f not in self.table]
        if missing:
            raise InputError(self.prepared.path, f"the card lists findings with no column in the table: {missing}")
        self.findings = self.table[finding_columns].astype(np.float32).to_numpy().reshape(len(self.table), len(finding_columns))
        self.transform = build_augment(augment, self.spatial_shape) if augment is not None else None
        self._caption_cfg = _caption_config(self.prepared) if caption_dropout > 0 else None
        if caption_dropout > 0 and text_column != "text":
            raise ConfigError("data.caption_dropout re-renders metadata captions: it needs text_column 'text'")
        self._caption_rows = _rebuildable(self.prepared, self.table, self._caption_cfg) if self._caption_cfg else {}

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.prepared.card["array_shape"])

    def __len__(self) -> int:
        return len(self.table)

    def group_ids(self, by: str) -> np.ndarray:
        """Integer group of every item: ``series`` (same volume) or ``label`` (same protocol)."""
        import pandas as pd

        if by == "label":
            if (self.labels < 0).all():
                raise ConfigError(f"{self.prepared.path}: sampler 'distinct_label' needs protocol labels; this dataset has none")
            # Unlabelled items each form their own group.
            return np.where(self.labels >= 0, self.labels, -1 - np.arange(len(self.labels)))
        return pd.factorize(self.table["series_id"])[0]

    def image(self, i: int) -> np.ndarray:
        """The stored image of item ``i`` with a channel axis, as float32."""
        if self.prepared.dims == 2:
            arr = self.prepared.slice(int(self.rows[i]))[None]
        else:
            arr = self.prepared.array(self.table["series_id"].iat[i])
        # A copy: the memory map is read-only and torch wants writable memory.
        return np.array(arr, dtype=np.float32)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        index, epoch = (key, None) if isinstance(key, (int, np.integer)) else key
        image = torch.from_numpy(self.image(index))
        text = self.texts[index]
        if epoch is not None:
            seed = item_seed(self.seed, epoch, index)
            if self.transform is not None:
                image = apply_augment(self.transform, image, seed)
            if self._caption_cfg is not None:
                text = self._dropout_caption(index, np.random.default_rng(seed))
            if self.sentence_dropout > 0:
                text = drop_sentences(text, self.sentence_dropout, np.random.default_rng([seed, 1]))
        return {
            "image": image,
            "text": text,
            "label": int(self.labels[index]),
            "times": torch.from_numpy(self.times[index]),
            "findings": torch.tensor(self.findings[index]),  # a copy: pandas may hand out read-only arrays
            "index": int(index),
        }

    def _dropout_caption(self, index: int, rng: np.random.Generator) -> str:
        """The item's caption re-rendered from its metadata with fields blanked at random."""
        from radlens.prepare.captions import caption_fields, drop_fields, render

        assert self._caption_cfg is not None
        row = self._caption_rows[self.table["series_id"].iat[index]]
        fields = caption_fields(_metadata(row), row.get("plane"), self._caption_cfg)
        return render(drop_fields(fields, self.caption_dropout, rng), self._caption_cfg)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def drop_sentences(text: str, p: float, rng: np.random.Generator) -> str:
    """The text with each sentence left out with probability ``p`` (order kept, never all).

    The report analogue of caption field dropout: a report-CLIP cannot memorise whole reports
    and has to tie sentences ("Small left pleural effusion.") to what the image shows.
    """
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    if len(sentences) < 2:
        return text
    keep = rng.random(len(sentences)) >= p
    if not keep.any():
        keep[rng.integers(len(sentences))] = True
    return " ".join(s for s, k in zip(sentences, keep) if k)


def _split_table(prepared: PreparedDataset, split: str, text_column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of ``split`` (slices for 2D, series for 3D) with the series columns items need.

    Returns the table and, for 2D, each row's position in ``slices`` (what ``prepared.slice`` takes).
    """
    table = prepared.slices if prepared.dims == 2 else prepared.series
    if table is None:
        raise InputError(prepared.path, "a 2D dataset without slices.parquet")
    positions = np.flatnonzero((table["split"] == split).to_numpy())
    if len(positions) == 0:
        raise InputError(prepared.path, f"no items in split {split!r}")
    rows = table.iloc[positions].reset_index(drop=True)
    if prepared.dims == 2:
        # Series-level columns (report sections, TE/TR/TI, metadata) joined onto the slices.
        extra = [c for c in prepared.series.columns if c not in rows.columns or c == "series_id"]
        rows = rows.merge(prepared.series[extra], on="series_id", how="left")
    if text_column not in rows.columns:
        raise InputError(prepared.path, f"no text column {text_column!r} (columns: {', '.join(map(str, rows.columns))})")
    return rows, positions


def _caption_config(prepared: PreparedDataset) -> CaptionConfig:
    """The caption config the dataset was prepared with (card ``config.caption``)."""
    from dataclasses import fields

    from radlens.prepare.captions import CaptionConfig

    saved = prepared.card.get("config", {}).get("caption")
    if not isinstance(saved, dict):
        raise InputError(prepared.path, "caption dropout needs a metadata-caption dataset (card has no config.caption)")
    names = {f.name for f in fields(CaptionConfig)}
    return CaptionConfig(**{k: v for k, v in saved.items() if k in names})


def _rebuildable(prepared: PreparedDataset, table: pd.DataFrame, cfg: CaptionConfig) -> dict[str, pd.Series]:
    """Series id -> series row for the series of ``table``, once each stored caption is checked to be
    exactly what the series' metadata renders to, so that dropout re-renders it right.

    ConfigError naming the first series whose text is not (a dataset whose text came from its source,
    e.g. ``prepare csv`` of an MR-CLIP table, whose metadata columns are empty, or reports).
    """
    from radlens.prepare.captions import make_caption

    series = prepared.series.drop_duplicates("series_id").set_index("series_id", drop=False)
    rows: dict[str, pd.Series] = {}
    for sid in table["series_id"].unique():
        row = series.loc[sid]
        rebuilt, stored = make_caption(_metadata(row), row.get("plane"), cfg), str(row["text"])
        if rebuilt != stored:
            raise ConfigError(
                f"{prepared.path}: data.caption_dropout: captions cannot be rebuilt from this dataset's metadata: "
                f"series {sid!r} has the text {stored[:100]!r} but its metadata renders {rebuilt[:160]!r}. Caption "
                "dropout re-renders metadata captions (datasets prepared from DICOM or BIDS); leave it at 0 here"
            )
        rows[str(sid)] = row
    return rows


def _metadata(row: pd.Series) -> Any:
    """An ``AcquisitionMetadata`` from the metadata columns of a table row."""
    from radlens.io.metadata import LIST_FIELDS, AcquisitionMetadata

    values: dict[str, Any] = {}
    for name in AcquisitionMetadata.field_names():
        value = row.get(name)
        if value is None:
            continue
        if name in LIST_FIELDS and not isinstance(value, str):
            value = tuple(str(v) for v in value)
        values[name] = value
    return AcquisitionMetadata(**values)


class ClipCollate:
    """Stack images, tokenise texts with the model's tokenizer, and keep labels/times/findings for the loss.

    Tokenising here (in the DataLoader workers) keeps the training step free of string work.
    """

    def __init__(self, tokenize: Callable[[Sequence[str]], dict[str, torch.Tensor]]) -> None:
        self.tokenize = tokenize

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        texts = [it["text"] for it in items]
        tokens = self.tokenize(texts)
        return {
            "images": torch.stack([it["image"] for it in items]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "times": torch.stack([it["times"] for it in items]),
            "findings": torch.stack([it["findings"] for it in items]),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "texts": texts,
        }
