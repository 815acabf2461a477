"""Image-text datasets over a prepared folder, seeded augmentation, collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from support.prepared_clip import write_prepared
from support.prepared_findings import FINDINGS, write_findings_prepared

from radlens.data.augment import AugmentConfig
from radlens.data.datasets import ClipCollate, ClipDataset
from radlens.data.samplers import ClipBatchSampler
from radlens.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def prep2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("p2"), shape=(16, 16), patients={"train": 2, "test": 1})


def test_2d_items_are_the_stored_slices(prep2d: Path) -> None:
    ds = ClipDataset(prep2d, "train")
    assert len(ds) == 16  # 2 patients x 2 protocols x 4 slices
    item = ds[5]
    row = ds.table.iloc[5]
    stored = np.load(prep2d / row["array_path"])[row["row"]]
    np.testing.assert_array_equal(item["image"].numpy()[0], stored)
    assert item["label"] == row["label"] and item["text"] == row["text"]
    assert item["times"][0] == pytest.approx(row["EchoTime"]) and torch.isnan(item["times"][2])


def test_3d_items_are_volumes(tmp_path: Path) -> None:
    ds = ClipDataset(write_prepared(tmp_path / "p3", dims=3, shape=(8, 8, 4), patients={"train": 1}), "train")
    assert len(ds) == 2 and ds[0]["image"].shape == (1, 8, 8, 4)
    assert ds[0]["findings"].shape == (0,)  # the card lists no findings


def test_items_carry_the_cards_finding_labels(tmp_path: Path) -> None:
    ds = ClipDataset(write_findings_prepared(tmp_path / "f", patients={"train": 4}), "train")
    expected = ds.table[FINDINGS].to_numpy(dtype=np.float32)
    assert np.array_equal(np.stack([ds[i]["findings"].numpy() for i in range(len(ds))]), expected)


def test_bad_folders_and_columns(prep2d: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a prepared dataset"):
        ClipDataset(tmp_path, "train")
    with pytest.raises(InputError, match="no items in split 'validation'"):
        ClipDataset(prep2d, "validation")
    with pytest.raises(InputError, match="no text column"):
        ClipDataset(prep2d, "train", text_column="report_impression")
    with pytest.raises(ConfigError, match="text_column 'text'"):
        ClipDataset(prep2d, "train", text_column="report_findings", caption_dropout=0.5)


def _epoch_images(ds: ClipDataset, workers: int) -> torch.Tensor:
    sampler = ClipBatchSampler(len(ds), 4, seed=0)
    sampler.set_epoch(2)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                                         collate_fn=lambda items: torch.stack([it["image"] for it in items]))
    return torch.cat(list(loader))


def test_augmentation_depends_on_seed_epoch_index_not_workers(prep2d: Path) -> None:
    ds = ClipDataset(prep2d, "train", augment=AugmentConfig(flip_prob=0.5, affine_prob=1.0, noise_prob=1.0), seed=7)
    a, b = ds[(3, 1)]["image"], ds[(3, 1)]["image"]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, ds[(3, 2)]["image"])
    assert not torch.equal(a, ds[3]["image"])  # an evaluation key is never augmented
    torch.testing.assert_close(_epoch_images(ds, 0), _epoch_images(ds, 2))


def test_caption_dropout_is_seeded(prep2d: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    # The fixture's captions follow another template than its card: they cannot be rebuilt, so refused.
    with pytest.raises(ConfigError, match="captions cannot be rebuilt from this dataset's metadata: series 'sub-001_p0'"):
        ClipDataset(prep2d, "train", caption_dropout=1.0)
    consistent = tmp_path / "p2"  # the same data with each caption rendered by the card's template
    shutil.copytree(prep2d, consistent)
    series = pd.read_parquet(consistent / "series.parquet")
    series["text"] = [f"A brain MRI, plane axial, TE {te:g}, TR {tr:g}" for te, tr in zip(series["EchoTime"], series["RepetitionTime"])]
    series.to_parquet(consistent / "series.parquet", index=False)
    slices = pd.read_parquet(consistent / "slices.parquet")
    slices["text"] = slices["series_id"].map(series.set_index("series_id")["text"])
    slices.to_parquet(consistent / "slices.parquet", index=False)
    ds = ClipDataset(consistent, "train", caption_dropout=1.0)
    text = ds[(0, 0)]["text"]
    assert text == ds[(0, 0)]["text"]
    assert text == "A brain MRI, plane axial, TE NONE, TR NONE"
    assert ds[0]["text"] == ds.texts[0] == "A brain MRI, plane axial, TE 0.01, TR 0.5"


def test_collate_tokenises_and_stacks(prep2d: Path) -> None:
    ds = ClipDataset(prep2d, "train")

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.ones(len(texts), 3, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": ids}

    batch = ClipCollate(tokenize)([ds[i] for i in range(3)])
    assert batch["images"].shape == (3, 1, 16, 16) and batch["input_ids"].shape == (3, 3)
    assert batch["labels"].tolist() == [ds[i]["label"] for i in range(3)] and batch["times"].shape == (3, 3)
    assert batch["findings"].shape == (3, 0)


def test_sentence_dropout_keeps_order_never_empties_and_is_seeded() -> None:
    import numpy as np

    from radlens.data.datasets import drop_sentences

    report = "Cardiomegaly. No pleural effusion. Small nodule in the left lung. Trachea is patent."
    sentences = report.split(". ")
    for seed in range(20):
        kept = drop_sentences(report, 0.5, np.random.default_rng(seed))
        assert kept and kept == drop_sentences(report, 0.5, np.random.default_rng(seed))
        positions = [report.index(s.rstrip(".")) for s in kept.split(". ")]
        assert positions == sorted(positions) and len(kept.split(". ")) <= len(sentences)
    assert drop_sentences(report, 0.99, np.random.default_rng(0)).count(".") == 1
    assert drop_sentences("One sentence only.", 0.9, np.random.default_rng(0)) == "One sentence only."
