"""`radlens train seg`: a tiny UNet learns the phantom's tissue maps; the bundle keeps the segmenter interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from support.prepared_clip import quick_trainer
from support.prepared_tissue import tissue_prepared

from radlens.data.augment import AugmentConfig
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset
from radlens.metrics.segmentation import dice_from_counts, overlap_counts
from radlens.models.bundle import load_model
from radlens.models.segmenter import segmenter_labels
from radlens.train.config import OptimConfig
from radlens.train.seg import SegDataConfig, segmenter_for, train_seg

STEPS = 24
FAST = OptimConfig(lr=5e-3, warmup_steps=2, weight_decay=1e-4)
DATA = SegDataConfig(batch_size=8, contrasts=["T1w"], augment=AugmentConfig(enabled=False))  # intensity randomisation on


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    return tissue_prepared(tmp_path_factory, dims=2)


@pytest.fixture(scope="module")
def run(prepared: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "run"
    return train_seg(str(prepared.path), str(out), data=DATA, optim=FAST,
                     trainer=quick_trainer(max_steps=STEPS, val_every_n_steps=STEPS // 2, checkpoint_every_n_steps=STEPS,
                                           accelerator="cpu"))


def _validation_t1(ds: PreparedDataset) -> tuple[torch.Tensor, np.ndarray]:
    val = ds.split("validation")
    t1 = set(ds.series.loc[ds.series["contrast"] == "T1w", "series_id"])
    ids = val.loc[val["series_id"].isin(t1), "slice_id"]
    images = torch.from_numpy(np.stack([np.asarray(ds.slice(s)) for s in ids]))[:, None].float()
    return images, np.stack([np.asarray(ds.slice_mask(s)) for s in ids])


def _dice(model: torch.nn.Module, images: torch.Tensor, truth: np.ndarray) -> float:
    return float(dice_from_counts(overlap_counts(model.segment(images).numpy(), truth, [1, 2, 3])).mean())


def test_training_learns_the_tissue_maps(run: Path, prepared: PreparedDataset) -> None:
    logs = pd.read_csv(next((run / "logs" / "csv").glob("version_*/metrics.csv")))
    losses = logs["train/loss"].dropna().to_numpy()
    assert losses[-5:].mean() < 0.8 * losses[:5].mean()
    assert logs["val/dice"].notna().sum() == 2 and "val/dice_grey_matter" in logs.columns
    trained = load_model(run / "best", kind="segmenter")
    torch.manual_seed(0)
    untrained = segmenter_for("seg-unet-tiny", prepared).eval()
    images, truth = _validation_t1(prepared)
    assert _dice(trained, images, truth) > _dice(untrained, images, truth) + 0.1  # CSF, GM, WM of a held-out patient


def test_bundle_gives_the_segmenter_interface(run: Path, prepared: PreparedDataset) -> None:
    model = load_model(run / "best", kind="segmenter")  # the family selects unet-seg and dynunet-seg alike
    assert model.config["kind"] == "unet-seg" and model.config["out_channels"] == 5
    assert model.config["label_ids"] == [0, 1, 2, 3, 4] and model.config["spatial_dims"] == 2
    images = torch.from_numpy(np.stack([np.asarray(prepared.slice(i)) for i in range(3)]))[:, None].float()
    logits, labels = model(images), model.segment(images)
    assert logits.shape == (3, 5, 32, 32) and labels.shape == (3, 32, 32) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= set(prepared.labels)
    assert segmenter_labels(run / "best") == prepared.labels == segmenter_labels(run)  # a run folder gives best/
    assert model.preprocessing["labels"] == {str(k): v for k, v in prepared.labels.items()}
    assert model.extra["contrasts"] == ["T1w"] and model.extra["monitor"] == "val/dice"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["contrasts"] == ["T1w"] and config["data"]["intensity"]["enabled"] is True
    with pytest.raises(InputError, match="a unet-seg model, but a clip model is needed"):
        load_model(run / "best", kind="clip")
    with pytest.raises(ConfigError, match="already holds a run"):
        train_seg(str(prepared.path), str(run), data=DATA)


def test_bad_requests_are_refused_before_training(prepared: PreparedDataset, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no series of contrast \['FLAIR'\]; it has \['T1w', 'T2w'\]"):
        train_seg(str(prepared.path), str(tmp_path / "a"), data=SegDataConfig(contrasts=["FLAIR"]))
    with pytest.raises(ConfigError, match="train seg needs a segmenter"):
        train_seg(str(prepared.path), str(tmp_path / "b"), model="tiny-vit2d")
    with pytest.raises(InputError, match="neither a model bundle nor a run folder"):
        segmenter_labels(prepared.path)


def test_a_3d_segmenter_trains_on_volumes(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    volumes = tissue_prepared(tmp_path_factory, dims=3)
    run = train_seg(str(volumes.path), str(tmp_path / "run3d"), data=SegDataConfig(batch_size=2), optim=FAST,
                    trainer=quick_trainer(max_steps=2, val_every_n_steps=2, accelerator="cpu"))
    model = load_model(run, kind="segmenter")
    assert model.config["spatial_dims"] == 3
    volume = torch.from_numpy(np.array(volumes.array(volumes.series["series_id"].iloc[0])))[None].float()
    assert model.segment(volume).shape == (1, 24, 28, 24)
