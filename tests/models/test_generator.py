"""Generative bundles: an LDM or ControlNet bundle is all sampling needs, and parts that do not fit are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.generative_bundles import frozen_minilm, preprocessing, save_ldm_bundle, save_vae_bundle, tiny_unet, tiny_vae
from support.prepared_generation import write_generation_prepared

from radlens.errors import ConfigError, InputError
from radlens.models.bundle import load_model, read_index, save_bundle
from radlens.models.components import build, weights_digest
from radlens.models.controlnet import controlnet_for
from radlens.models.generator import GenerativeParts, load_generator, load_part
from radlens.models.sampling import sample


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    prepared = write_generation_prepared(root / "prep", patients={"train": 1})
    text = frozen_minilm()
    ldm = save_ldm_bundle(root / "ldm", prepared, text)
    unet = load_part(ldm, "unet")
    parts = GenerativeParts({"vae": load_part(ldm, "vae"), "unet": unet, "text": text,
                             "controlnet": controlnet_for(unet, 4, 5)})
    controlnet = save_bundle(parts, root / "cn", preprocessing(prepared), {"prompts": read_index(ldm)["extra"]["prompts"]})
    return {"prepared": prepared, "ldm": ldm, "cn": controlnet, "vae": save_vae_bundle(root / "vae", prepared),
            "other_ldm": save_ldm_bundle(root / "other", prepared, text, seed=1)}


def test_a_controlnet_bundle_samples_on_its_own(bundles: dict[str, Path]) -> None:
    gen = load_generator(bundles["cn"])
    assert gen.controlnet is not None and gen.image_shape == (32, 32) and gen.bundle == bundles["cn"]
    assert not any(p.requires_grad for p in gen.unet.parameters()) and not gen.unet.training
    prompt = gen.prompt("T2w", ["GM", "lesion"], plane="axial")  # modality, body part, TE/TR: typical of T2w in training
    assert prompt.startswith("T2w brain MRI, fat high signal") and "TE 100 ms, TR 4500 ms, axial brain, grey matter, lesion" in prompt
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    images = sample(gen.vae, gen.unet, gen.controlnet, gen.encode([prompt]), mask, seed=0, steps=2)
    assert images.shape == (1, 1, 32, 32)
    assert isinstance(load_model(bundles["cn"]), torch.nn.ModuleDict)  # a plain multi-component bundle
    assert load_part(bundles["vae"], "vae").config["kind"] == "autoencoder_kl"  # a `train vae` bundle's model
    with pytest.raises(InputError, match="the bundle has no controlnet"):
        load_part(bundles["ldm"], "controlnet")
    with pytest.raises(InputError, match="not an LDM or ControlNet bundle.*model: autoencoder_kl"):
        load_generator(bundles["vae"])


def test_parts_that_do_not_fit_are_config_errors_naming_the_bundles(bundles: dict[str, Path], tmp_path: Path) -> None:
    load_generator(bundles["cn"], ldm=bundles["ldm"])  # the LDM it came from
    with pytest.raises(ConfigError, match=rf"{bundles['cn']}: its ControlNet was trained on another UNet than the one in "
                                          rf"{bundles['other_ldm']}"):
        load_generator(bundles["cn"], ldm=bundles["other_ldm"])
    assert weights_digest(load_part(bundles["ldm"], "unet")) != weights_digest(load_part(bundles["other_ldm"], "unet"))
    wide = save_bundle(build({**tiny_vae().config, "latent_channels": 8}), tmp_path / "wide", preprocessing(bundles["prepared"]))
    with pytest.raises(ConfigError, match=rf"{bundles['ldm']} with the VAE of {wide}: 8 latent channels but the UNet takes 4"):
        load_generator(bundles["ldm"], vae=wide)
    deep = save_bundle(build({**tiny_vae().config, "channels": [8, 8, 16, 16], "attention_levels": [False] * 4}),
                       tmp_path / "deep", preprocessing(bundles["prepared"]))
    with pytest.raises(ConfigError, match=r"latent size \[4, 4\] but the UNet was trained on \[8, 8\]"):
        load_generator(bundles["ldm"], vae=deep)
    narrow = GenerativeParts({"vae": tiny_vae(), "unet": tiny_unet(cross_attention_dim=64), "text": frozen_minilm()})
    folder = save_bundle(narrow, tmp_path / "narrow", preprocessing(bundles["prepared"]))
    with pytest.raises(ConfigError, match=rf"{folder}: the text tower is 384 wide but the UNet cross-attends to 64"):
        load_generator(folder)
