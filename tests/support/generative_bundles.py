"""Tiny generative components and bundles saved as the training commands save them, without training.

The LDM and ControlNet tests start from these (a ``train vae`` / ``train ldm`` run would cost seconds
each); their own training runs are what those tests check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# 32x32 slices -> 4 x 8 x 8 latents; a two-level UNet with cross-attention at 8 x 8 -> 4 x 4.
TINY_VAE = {"kind": "autoencoder_kl", "channels": [8, 16, 16], "num_res_blocks": 1, "attention_levels": [False, False, False],
            "latent_channels": 4, "norm_num_groups": 8, "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}
TINY_UNET = {"kind": "diffusion_unet", "in_channels": 4, "out_channels": 4, "channels": [16, 32], "attention_levels": [False, True],
             "num_res_blocks": 1, "norm_num_groups": 8, "num_head_channels": 8, "cross_attention_dim": 384, "sample_size": [8, 8]}


def tiny_vae(seed: int = 0, scale_factor: float = 1.5) -> Any:
    from radlens.models.components import build

    torch.manual_seed(seed)
    vae = build(TINY_VAE)
    vae.scale_factor.fill_(scale_factor)
    return vae.eval()


def tiny_unet(seed: int = 0, nudge: float = 0.0, **changes: Any) -> Any:
    """The tiny UNet; ``nudge`` adds that much Gaussian noise to every weight. MONAI zero-initialises the UNet's
    output convolution and the cross-attention projections: untrained, it predicts zero whatever its input and
    passes no gradient back (to a ControlNet, say). A nudged one stands in for a trained UNet."""
    from radlens.models.components import build

    torch.manual_seed(seed)
    unet = build({**TINY_UNET, **changes}).eval()
    if nudge:
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(nudge * torch.randn_like(p))
    return unet


def frozen_minilm() -> Any:
    from radlens.models.components import build

    return build({"kind": "minilm", "trainable_layers": 0}).eval()


def preprocessing(prepared: Path) -> dict[str, Any]:
    from radlens.data.modules import preprocessing_from_card
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    return {**preprocessing_from_card(ds.card), "labels": ds.card.get("labels", {})}


def save_vae_bundle(folder: Path, prepared: Path, seed: int = 0) -> Path:
    """A ``train vae``-shaped bundle (component ``model``) of an untrained tiny autoencoder."""
    from radlens.models.bundle import save_bundle

    return save_bundle(tiny_vae(seed), folder, preprocessing(prepared), {"note": "untrained"})


def save_ldm_bundle(folder: Path, prepared: Path, text: Any = None, seed: int = 0, unet: Any = None) -> Path:
    """A ``train ldm``-shaped bundle (``vae``, ``unet``, ``text``, ``extra.prompts``) of untrained tiny parts (the UNet nudged)."""
    from radlens.data.generation_prompts import PromptConfig, PromptTemplate
    from radlens.models.bundle import save_bundle
    from radlens.models.generator import GenerativeParts

    parts = GenerativeParts({"vae": tiny_vae(seed), "unet": unet if unet is not None else tiny_unet(seed, nudge=0.05),
                             "text": text if text is not None else frozen_minilm()})
    prompts = {**PromptTemplate.from_config(PromptConfig()).to_dict(), "labels": preprocessing(prepared)["labels"],
               "contrast_fields": {"T2w": {"echo_time": "100", "repetition_time": "4500", "inversion_time": None,
                                           "modality": "MRI", "body_part": "brain"}}}
    return save_bundle(parts, folder, preprocessing(prepared), {"prompts": prompts})
