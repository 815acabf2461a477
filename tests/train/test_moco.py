"""``train_moco``: MoCo v3 / LeCL end to end on a tiny CT dataset with lesion boxes, on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_clip import quick_trainer, write_prepared
from support.prepared_lesions import write_lesion_prepared
from support.trajectories import interrupted_at, train_losses

from radlens.data.views import MocoDataConfig
from radlens.errors import ConfigError, InputError
from radlens.losses.moco import MocoLoss
from radlens.models.bundle import load_model
from radlens.models.components import build
from radlens.train.config import OptimConfig
from radlens.train.moco import train_moco
from radlens.train.moco_config import MocoConfig, MocoLossConfig
from radlens.train.moco_task import knn_balanced_accuracy, momentum_at

ENCODER = {"kind": "gated_cnn", "input_shape": [32, 32], "depths": [1, 1], "dims": [8, 16]}
HEADS = MocoConfig(dim=8, hidden=16, momentum_cosine=True, knn_k=5)
WINDOWS = [(-1000.0, 400.0), (-160.0, 240.0)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 training patients x 6 slices (every other one with a lesion box), 2 validation patients."""
    return write_lesion_prepared(tmp_path_factory.mktemp("lesions"))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("encoder") / "tiny-gated.json"
    path.write_text(json.dumps(ENCODER))
    return str(path)


def _lecl(prepared: Path, encoder: str, out: Path, **changes: object) -> Path:
    data = MocoDataConfig(batch_size=8, sampler="balanced", lesion_views=True, windows=WINDOWS)
    kwargs = dict(data=data, encoder=encoder, optim=OptimConfig(lr=0.5, warmup_steps=1), loss=MocoLossConfig(lesion_weight=1.0),
                  moco=HEADS, trainer=quick_trainer(max_steps=6, val_every_n_steps=3))
    return train_moco(str(prepared), str(out), **{**kwargs, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lecl_run(prepared: Path, encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _lecl(prepared, encoder, tmp_path_factory.mktemp("run") / "lecl")


def test_a_lecl_run_writes_bundles_that_encode_slices(lecl_run: Path, prepared: Path) -> None:
    model = load_model(lecl_run, kind="moco")
    assert model.input_shape == (2, 32, 32)  # two windows as channels; shape and channels from the data
    assert model.config["encoder"]["in_channels"] == 2 and model.config["encoder"]["input_shape"] == [32, 32]
    assert model.preprocessing["windows"] == [list(w) for w in WINDOWS] and model.preprocessing["modality"] == "CT"
    with torch.no_grad():
        assert model.encode(torch.zeros(3, 2, 32, 32)).shape == (3, 16)
    last = torch.load(lecl_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6 and any(k.startswith("model.momentum_encoder.") for k in last["state_dict"])
    log = pd.concat(pd.read_csv(f) for f in (lecl_run / "logs" / "csv").glob("version_*/metrics.csv"))
    for metric in ("val/loss", "val/knn_lesion_bacc", "val/alignment", "val/uniformity"):
        assert log[metric].notna().sum() == 2, metric  # validated at steps 3 and 6
    assert 0 <= log["val/knn_lesion_bacc"].max() <= 1
    momentum = log["train/momentum"].dropna().to_numpy()
    assert momentum[0] == pytest.approx(0.99) and np.all(np.diff(momentum) > 0)  # the cosine ramp toward 1
    assert log["lr-AdamW/pg1"].dropna().iloc[0] == pytest.approx(0.5 * 8 / 256)  # lr x batch / 256
    facts = json.loads((lecl_run / "run.json").read_text())
    assert facts["train_lesion_items"] == 18 and facts["train_slices_with_boxes"] == 18
    assert json.loads((lecl_run / "best" / "bundle.json").read_text())["extra"]["monitor"] == "val/loss"


def test_a_killed_and_resumed_run_continues_exactly(lecl_run: Path, prepared: Path, encoder: str, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    with interrupted_at(3):  # checkpoints every 2 steps, 4 batches an epoch: resumes mid-epoch from step 2
        _lecl(prepared, encoder, out)
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "last").exists()
    _lecl(prepared, encoder, out, resume="latest")
    assert train_losses(out) == pytest.approx(train_losses(lecl_run), rel=1e-5, abs=1e-6)
    with pytest.raises(ConfigError, match="already holds a run"):
        _lecl(prepared, encoder, out)


def test_training_steps_lower_the_loss(prepared: Path) -> None:
    from radlens.data.views import TwoViewDataset, collate_views

    ds = TwoViewDataset(prepared, "train", seed=0, lesion_views=True)
    batch = collate_views([ds[(i, 0)] for i in range(16)])
    torch.manual_seed(0)
    model = build({"kind": "moco", "encoder": {**ENCODER, "in_channels": 1}, "dim": 8, "hidden": 16})
    loss_fn = MocoLoss(temperature=0.2, lesion_weight=1.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(12):
        model.update_momentum(0.9)
        out = model(batch["view1"], batch["view2"])
        loss = loss_fn(out["q1"], out["q2"], out["k1"], out["k2"], batch["lesion"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses


def test_bad_options_fail_before_training(prepared: Path, encoder: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"window \[-1200, 400\] HU reaches outside the stored range"):
        train_moco(str(prepared), str(tmp_path / "a"), MocoDataConfig(batch_size=8, windows=[(-1200.0, 400.0)]),
                   encoder=encoder)
    mr = write_prepared(tmp_path / "mr", shape=(32, 32), patients={"train": 2, "validation": 1})
    with pytest.raises(InputError, match="loss.lesion_weight > 0 needs lesion slices"):
        train_moco(str(mr), str(tmp_path / "b"), MocoDataConfig(batch_size=4), encoder=encoder,
                   loss=MocoLossConfig(lesion_weight=1.0))
    with pytest.raises(InputError, match="data.sampler balanced needs lesion slices"):
        train_moco(str(mr), str(tmp_path / "c"), MocoDataConfig(batch_size=4, sampler="balanced"), encoder=encoder)
    with pytest.raises(ConfigError, match="needs an image encoder"):
        train_moco(str(prepared), str(tmp_path / "d"), MocoDataConfig(batch_size=4), encoder="tiny-vit2d")
    vit = tmp_path / "vit.json"
    vit.write_text(json.dumps({"kind": "vit", "input_shape": [16, 16], "patch_size": [5, 5], "hidden_size": 8, "mlp_dim": 8,
                               "num_layers": 1, "num_heads": 2}))
    with pytest.raises(ConfigError, match=r"1-channel 32x32 slices of .*not divisible by patch_size"):
        train_moco(str(prepared), str(tmp_path / "e"), MocoDataConfig(batch_size=4), encoder=str(vit))
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_momentum_schedule_and_knn_metric() -> None:
    assert momentum_at(0, 100, 0.99, cosine=False) == momentum_at(100, 100, 0.99, cosine=False) == 0.99
    assert momentum_at(0, 100, 0.99, cosine=True) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, cosine=True) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99, cosine=True) == pytest.approx(1.0)
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.1, 1.0], [0.2, 1.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    labels, patients = np.array([1, 1, 0, 0, 1, 0]), np.array(["a", "b", "a", "b", "c", "c"])
    assert knn_balanced_accuracy(z, labels, patients, k=2) == 1.0
    assert knn_balanced_accuracy(z, 1 - labels, patients, k=2) == 1.0
    assert knn_balanced_accuracy(z, np.ones(6, dtype=int), patients) is None  # one class
    assert knn_balanced_accuracy(z, labels, np.array(["a"] * 6)) is None  # one patient: no neighbour from another
    assert math.isclose(knn_balanced_accuracy(z, np.array([1, -1, 0, -1, 1, 0]), patients, k=1) or 0, 1.0)
