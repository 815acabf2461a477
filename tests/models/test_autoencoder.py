"""The latent autoencoder: MONAI's AutoencoderKL with an estimated latent scale factor that travels in its bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.generative_bundles import TINY_VAE

from radlens.errors import ConfigError
from radlens.models.bundle import load_model, save_bundle
from radlens.models.components import build
from radlens.models.registry import count_params, get_config


def test_scale_factor_is_one_over_the_latent_std_and_is_saved(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = build(TINY_VAE).eval()
    assert float(vae.scale_factor) == 1.0 and vae.downsample_factor == 4 and vae.latent_shape((32, 24)) == (4, 8, 6)
    images = [torch.rand(3, 1, 32, 32) for _ in range(2)]
    value = vae.estimate_scale_factor(images, seed=3)
    with torch.no_grad():
        mu, sigma = zip(*(vae.encode(x) for x in images))
        generator = torch.Generator().manual_seed(3)
        z = torch.cat([m.double() + s.double() * torch.randn(m.shape, generator=generator, dtype=torch.float64)
                       for m, s in zip(mu, sigma)])
    assert value == pytest.approx(1 / float(z.std()), rel=1e-6) and float(vae.scale_factor) == pytest.approx(value)
    with torch.no_grad():  # encode_latents scales, decode_latents unscales
        x = images[0]
        assert torch.allclose(vae.encode_latents(x, sample=False), vae.encode(x)[0] * value, atol=1e-6)
        assert torch.allclose(vae.decode_latents(vae.encode_latents(x, sample=False)), vae.reconstruct(x), atol=1e-5)
    loaded = load_model(save_bundle(vae, tmp_path / "vae"), kind="autoencoder_kl")
    assert float(loaded.scale_factor) == pytest.approx(value)  # a buffer in model.safetensors


def test_bad_configs_and_shapes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="autoencoder_kl: AutoencoderKL expects all channels being multiple of norm_num_groups"):
        build({**TINY_VAE, "channels": [8, 12, 16]})
    with pytest.raises(ConfigError, match=r"image shape \[30, 32\] does not fit .* divisible by its downsample factor 4"):
        build(TINY_VAE).latent_shape((30, 32))
    with pytest.raises(ConfigError, match="needs at least one image"):
        build({**TINY_VAE}).estimate_scale_factor([torch.zeros(0, 1, 32, 32)])


def test_the_reference_size_builds_on_the_meta_device() -> None:
    """MRGen's 128-256-512-512 autoencoder with 16 latent channels (MONAI's decoder has one residual block per
    level fewer than diffusers', hence 72.8M rather than ~84M parameters)."""
    config = get_config("mrgen-vae")
    assert config["channels"] == [128, 256, 512, 512] and config["latent_channels"] == 16
    assert count_params(config)["total"] == 72_821_953
    with torch.device("meta"):
        vae = build({k: v for k, v in config.items() if k not in ("name", "description", "notes")})
    assert vae.latent_shape((512, 512)) == (16, 64, 64)
