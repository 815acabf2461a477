"""The diffusion UNet: MONAI's DiffusionModelUNet with its noise schedule, latent checks and reference sizes."""

from __future__ import annotations

import pytest
import torch
from support.generative_bundles import TINY_UNET

from radlens.errors import ConfigError
from radlens.models.components import build
from radlens.models.controlnet import MaskControlNet, embedding_channels
from radlens.models.registry import architecture, count_params, get_config


def test_the_schedule_travels_with_the_unet() -> None:
    torch.manual_seed(0)
    unet = build(TINY_UNET)
    train = unet.train_scheduler()
    assert train.num_train_timesteps == 1000 and train.prediction_type == "epsilon" and not train.clip_sample
    # Stable Diffusion's scaled-linear betas: sqrt-spaced from 0.00085 to 0.012.
    assert float(train.betas[0]) == pytest.approx(0.00085) and float(train.betas[-1]) == pytest.approx(0.012)
    ddim = unet.sampling_scheduler(50)
    assert len(ddim.timesteps) == 50 and int(ddim.timesteps[0]) == 999 and int(ddim.timesteps[-1]) == 1  # MONAI's spacing
    out = unet(torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), context=torch.randn(2, 7, 384))
    assert out.shape == (2, 4, 8, 8)
    with pytest.raises(ConfigError, match="steps must be in 1..1000"):
        unet.sampling_scheduler(0)


def test_latents_that_do_not_fit_are_config_errors_naming_where() -> None:
    unet = build(TINY_UNET)
    unet.check_latents(4, (8, 8), "here")
    with pytest.raises(ConfigError, match=r"^vae X: 16 latent channels but the UNet takes 4 and gives 4; latent size \[16, 16\] but "
                                          r"the UNet was trained on \[8, 8\]"):
        unet.check_latents(16, (16, 16), "vae X")
    with pytest.raises(ConfigError, match="not divisible by the UNet's down-sampling 2"):
        build({**TINY_UNET, "sample_size": None}).check_latents(4, (5, 8), "x")
    with pytest.raises(ConfigError, match="schedule must be one of"):
        build({**TINY_UNET, "schedule": "cosine"})
    with pytest.raises(ConfigError, match="diffusion_unet: .*multiple of norm_num_groups"):
        build({**TINY_UNET, "channels": [16, 28]})


def test_reference_sizes_count_as_stable_diffusion() -> None:
    """MRGen's UNet (Stable Diffusion 1.x's 320-640-1280-1280) built on the meta device: with SD's 4 latent
    channels and 768-wide text it has exactly SD 1.5's 859,520,964 parameters; radlens' reference config
    (16 latent channels, MiniLM's 384-wide states) 850,005,456."""
    config = get_config("mrgen-unet")
    assert config["channels"] == [320, 640, 1280, 1280] and count_params(config)["total"] == 850_005_456
    sd15 = {**architecture(config), "in_channels": 4, "out_channels": 4, "cross_attention_dim": 768}
    assert count_params(sd15)["total"] == 859_520_964
    # Its ControlNet (MRGen's 16-32-96-256 mask embedding): within 0.001% of diffusers' SD 1.5 ControlNet (361,278,852).
    shared = {k: v for k, v in sd15.items() if k not in ("kind", "out_channels", "sample_size")}
    with torch.device("meta"):
        net = MaskControlNet(**shared, num_labels=4, mask_encoding="onehot", conditioning_channels=embedding_channels(8))
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(361_278_852, rel=1e-5)
