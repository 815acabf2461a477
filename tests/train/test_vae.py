"""``train_vae``: the latent autoencoder learns to reconstruct held-out patients' slices, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from support.generative_bundles import TINY_VAE
from support.prepared_clip import quick_trainer
from support.prepared_generation import write_generation_prepared

from radlens.data.generation import GenerationDataset
from radlens.errors import ConfigError
from radlens.io.prepared import PreparedDataset
from radlens.models.bundle import load_model
from radlens.models.registry import build_model
from radlens.train.config import OptimConfig
from radlens.train.generative_config import GenerationDataConfig
from radlens.train.vae import evaluate_reconstruction, train_vae

DATA = GenerationDataConfig(batch_size=8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training patients (32 slices of 32 x 32: T1w and T2w), 1 validation, 1 test patient."""
    return write_generation_prepared(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "vae.json"
    path.write_text(json.dumps(TINY_VAE))
    return str(path)


def _train(prepared: Path, model: str, out: Path, **changes: object) -> Path:
    kwargs = dict(model=model, data=DATA, optim=OptimConfig(lr=3e-3, warmup_steps=2, weight_decay=0.0), n_bootstrap=100,
                  trainer=quick_trainer(max_steps=30, val_every_n_steps=15, checkpoint_every_n_steps=15))
    return train_vae(str(prepared), str(out), **{**kwargs, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def vae_run(prepared: Path, model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(prepared, model, tmp_path_factory.mktemp("run") / "vae")


def test_a_short_run_reconstructs_held_out_patients_better_than_the_untrained_net(vae_run: Path, prepared: Path, model: str) -> None:
    metrics = json.loads((vae_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_patients"] == 1 and metrics["n_slices"] == 8
    assert metrics["data_range"] == 1.0 and metrics["ssim_window"] == 11 and metrics["global_step"] == 30
    torch.manual_seed(0)
    untrained = evaluate_reconstruction(build_model(model), PreparedDataset(prepared), "test", DATA, n_bootstrap=0)
    assert metrics["psnr"]["mean"] > untrained["psnr"]["mean"] + 5, (metrics["psnr"], untrained["psnr"])
    assert metrics["ssim"]["mean"] > untrained["ssim"]["mean"] + 0.1, (metrics["ssim"], untrained["ssim"])
    ci = metrics["psnr"]["ci95"]
    assert ci["n"] == 100 and ci["low"] == pytest.approx(ci["high"])  # one test patient: every resample is the same
    log = pd.concat(pd.read_csv(f) for f in (vae_run / "logs" / "csv").glob("version_*/metrics.csv"))
    assert log["val/psnr"].notna().sum() == 2 and log["train/kl"].notna().sum() == 30 and log["train/mse"].notna().sum() == 30


def test_the_bundle_carries_the_latent_scale_factor_of_its_weights(vae_run: Path, prepared: Path) -> None:
    vae = load_model(vae_run, kind="autoencoder_kl")
    stored = float(vae.scale_factor)
    assert stored != 1.0 and stored == pytest.approx(json.loads((vae_run / "metrics.json").read_text())["scale_factor"])
    train = GenerationDataset(prepared, "train")
    again = vae.estimate_scale_factor([torch.stack([train[i]["image"] for i in range(len(train))])], seed=0)
    assert again == pytest.approx(stored, rel=1e-4)  # 1 / std of the training latents, as estimated in training
    assert vae.preprocessing["array_shape"] == [32, 32] and vae.preprocessing["labels"]["3"] == "WM"
    bundle = json.loads((vae_run / "best" / "bundle.json").read_text())
    assert bundle["components"] == {"model": "autoencoder_kl"} and bundle["extra"]["monitor"] == "val/psnr"


def test_bad_options_fail_before_training(prepared: Path, model: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no slices in eval_split 'holdout'"):
        _train(prepared, model, tmp_path / "a", eval_split="holdout")
    with pytest.raises(ConfigError, match="'tiny-ldm-unet' is a diffusion_unet config; a autoencoder_kl config is needed"):
        _train(prepared, "tiny-ldm-unet", tmp_path / "b")
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps({**TINY_VAE, "channels": [8] * 7, "attention_levels": [False] * 7}))
    with pytest.raises(ConfigError, match=r"on the \[32, 32\] slices of .*divisible by its downsample factor 64"):
        _train(prepared, str(deep), tmp_path / "c")
    with pytest.raises(ConfigError, match="loss.kl_weight must be >= 0"):
        from radlens.train.generative_config import VAELossConfig

        _train(prepared, model, tmp_path / "d", loss=VAELossConfig(kl_weight=-1))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
