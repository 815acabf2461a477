"""``train_ldm``: a text-conditioned latent diffusion UNet learns to predict noise, resumes, and its bundle samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.generative_bundles import TINY_UNET, preprocessing, save_vae_bundle, tiny_unet
from support.prepared_clip import quick_trainer
from support.prepared_generation import write_generation_prepared
from support.trajectories import interrupted_at, train_losses

from radlens.data.generation_prompts import DEFAULT_TEMPLATE, PromptConfig
from radlens.errors import ConfigError, InputError
from radlens.models.bundle import save_bundle
from radlens.models.generator import GenerativeParts, load_generator, load_part
from radlens.models.sampling import sample
from radlens.train.config import OptimConfig
from radlens.train.diffusion_task import LatentDiffusionTask
from radlens.train.generative_config import GenerationDataConfig
from radlens.train.ldm import train_ldm


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_generation_prepared(tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def inputs(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    (root / "unet.json").write_text(json.dumps({k: v for k, v in TINY_UNET.items() if k != "sample_size"}))
    return {"vae": str(save_vae_bundle(root / "vae", prepared)), "unet": str(root / "unet.json")}


def _train(prepared: Path, inputs: dict[str, str], out: Path, **changes: object) -> Path:
    kwargs = dict(vae=inputs["vae"], unet=inputs["unet"], data=GenerationDataConfig(batch_size=8),
                  optim=OptimConfig(lr=2e-3, warmup_steps=2, weight_decay=0.0),
                  trainer=quick_trainer(max_steps=24, val_every_n_steps=12, checkpoint_every_n_steps=4))
    return train_ldm(str(prepared), str(out), **{**kwargs, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ldm_run(prepared: Path, inputs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(prepared, inputs, tmp_path_factory.mktemp("run") / "ldm")


def test_the_bundle_holds_what_sampling_needs(ldm_run: Path) -> None:
    index = json.loads((ldm_run / "best" / "bundle.json").read_text())
    assert index["components"] == {"vae": "autoencoder_kl", "unet": "diffusion_unet", "text": "minilm"}
    prompts = index["extra"]["prompts"]
    assert prompts["template"] == list(DEFAULT_TEMPLATE) and prompts["labels"]["2"] == "GM"
    assert prompts["contrast_fields"]["T2w"]["echo_time"] == "100" and prompts["contrast_fields"]["T1w"]["body_part"] == "brain"
    assert "T1w" in prompts["attributes"]
    assert any(p.startswith("T2w brain MRI, fat high signal") for p in index["extra"]["example_prompts"])
    gen = load_generator(ldm_run)
    unet = gen.unet.config
    assert unet["sample_size"] == [8, 8] and unet["cross_attention_dim"] == 384 and unet["in_channels"] == 4
    assert float(gen.vae.scale_factor) == 1.5  # the frozen autoencoder, as given
    images = sample(gen.vae, gen.unet, None, gen.encode([gen.prompt("T1w", plane="axial")]), seed=0, steps=3)
    assert images.shape == (1, 1, 32, 32) and torch.isfinite(images).all()
    last = torch.load(ldm_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not [k for k in last["state_dict"] if k.startswith(("model.vae.", "model.text."))]  # frozen parts left out
    assert any(k.startswith("model.unet.") for k in last["state_dict"]) and set(last["frozen_sha256"]) == {"vae", "text"}


def test_training_lowers_the_noise_prediction_loss(ldm_run: Path, prepared: Path) -> None:
    """The same validation batch, noise and timesteps: the trained UNet predicts the noise better than an untrained one."""
    from radlens.data.generation import GenerationDataset
    from radlens.data.generation_prompts import PromptBuilder, PromptTemplate
    from radlens.io.prepared import PreparedDataset

    gen = load_generator(ldm_run)
    ds = PreparedDataset(prepared)
    val = GenerationDataset(ds, "validation", prompts=PromptBuilder(ds, PromptTemplate.from_config(PromptConfig())))
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])

    def loss(unet: torch.nn.Module) -> float:
        task = LatentDiffusionTask(GenerativeParts({"vae": gen.vae, "unet": unet, "text": gen.text}))
        with torch.no_grad():
            return float(task.step(batch, "val").loss)

    untrained = loss(tiny_unet(seed=0))
    trained = loss(gen.unet)
    print(f"fixed-noise validation loss: untrained {untrained:.3f}, trained {trained:.3f}")
    assert trained < 0.8 * untrained, (trained, untrained)


def test_a_killed_and_resumed_run_continues_exactly(ldm_run: Path, prepared: Path, inputs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    with interrupted_at(6):  # checkpoints every 4 steps: resumes from step 4, frozen parts refilled from the bundles
        _train(prepared, inputs, out)
    assert not (out / "last").exists()
    _train(prepared, inputs, out, resume="latest")
    assert train_losses(out) == pytest.approx(train_losses(ldm_run), rel=1e-5, abs=1e-6)
    changed = load_part(inputs["vae"], "vae")  # the autoencoder bundle replaced meanwhile
    with torch.no_grad():
        changed.scale_factor.fill_(2.0)
    other = save_bundle(changed, tmp_path / "other", preprocessing(prepared))
    with pytest.raises(ConfigError, match="the frozen vae of this run differ from the ones it was started with"):
        _train(prepared, {**inputs, "vae": str(other)}, out, resume="latest", trainer=quick_trainer(max_steps=20))


def test_bad_inputs_fail_before_training(prepared: Path, inputs: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--vae .* is required"):
        _train(prepared, inputs, tmp_path / "a", vae=None)
    with pytest.raises(ConfigError, match="prompt template field 'field_strength'"):
        _train(prepared, inputs, tmp_path / "b", prompts=PromptConfig(template=["{contrast}", "{field_strength} T"]))
    ct = save_bundle(load_part(inputs["vae"], "vae"), tmp_path / "ct", {**preprocessing(prepared), "modality": "CT"})
    with pytest.raises(InputError, match=r"dataset.json: modality 'MR', but the autoencoder .*ct was trained on 'CT'"):
        _train(prepared, {**inputs, "vae": str(ct)}, tmp_path / "c")
    with pytest.raises(ConfigError, match="'tiny-vae2d' is a autoencoder_kl config; a diffusion_unet config is needed"):
        _train(prepared, {**inputs, "unet": "tiny-vae2d"}, tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")
