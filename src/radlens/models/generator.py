"""The generative pipeline's bundles: what sampling needs, loaded together and checked to fit.

Three bundle kinds come out of ``radlens train``:

- VAE bundle (``train vae``): the single component ``model`` of kind ``autoencoder_kl`` (with its
  estimated latent ``scale_factor``); ``load_model(path, kind="autoencoder_kl")`` loads it.
- LDM bundle (``train ldm``): components ``vae``, ``unet`` (``diffusion_unet``) and ``text`` (the
  frozen text tower), and in ``extra.prompts`` the prompt template and tables the UNet was trained with.
- ControlNet bundle (``train controlnet``): the LDM's three components plus ``controlnet``
  (``mask_controlnet``), and ``extra.controlnet`` (source/target contrasts, labels).

An LDM or ControlNet bundle is self-contained: :func:`load_generator` gives a :class:`Generator`
from it alone. Parts from elsewhere can be swapped in (``ldm=``: another LDM bundle, whose UNet must be
the one the ControlNet was trained on; ``vae=``: another VAE bundle, whose latents must fit the UNet),
and every combination is checked: latent channels and size between VAE and UNet, text width and
cross-attention, ControlNet architecture and mask down-sampling. A misfit is a ConfigError naming the
bundles. :func:`load_part` gives one component of any of the three kinds.
"""

from __future__ import annotations

import collections.abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.components import weights_digest

if TYPE_CHECKING:
    from radlens.data.generation_prompts import PromptTemplate
    from radlens.models.autoencoder import LatentAutoencoder
    from radlens.models.controlnet import MaskControlNet
    from radlens.models.diffusion import DiffusionUNet
    from radlens.models.sampling import Conditioning
    from radlens.models.text_tower import TextTower

PARTS = ("vae", "unet", "text", "controlnet")
KINDS = {"vae": "autoencoder_kl", "unet": "diffusion_unet", "controlnet": "mask_controlnet"}


class GenerativeParts(nn.ModuleDict):
    """Named components trained together (some frozen), saved by :func:`radlens.models.bundle.save_bundle`
    as a multi-component bundle (it is a ``Mapping`` of name -> component)."""


collections.abc.Mapping.register(GenerativeParts)


@dataclass
class Generator:
    """What sampling needs: the networks, the prompt template, the image shape of training (and the bundle's
    ``preprocessing``: what the training slices looked like).

    ``prompts`` is None for a bundle trained without prompts metadata; ``contrast_fields`` holds, per
    contrast class of the training data, typical TE/TR/TI (ms) and flip angle for target prompts.
    """

    vae: LatentAutoencoder
    unet: DiffusionUNet
    text: TextTower
    controlnet: MaskControlNet | None
    prompts: PromptTemplate | None
    image_shape: tuple[int, ...]
    labels: dict[int, str] = field(default_factory=dict)
    contrast_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundle: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Generator:
        """Move the networks to ``device`` (in place); returns self."""
        for part in (self.vae, self.unet, self.text, self.controlnet):
            if part is not None:
                part.to(device)
        return self

    def encode(self, prompts: list[str]) -> Conditioning:
        """Prompt states for :func:`radlens.models.sampling.sample`, on the UNet's device."""
        from radlens.models.sampling import encode_prompts

        return encode_prompts(self.text, prompts, next(self.unet.parameters()).device)

    def prompt(self, contrast: str, structures: list[str] | None = None, **fields: Any) -> str:
        """A prompt in the training template for ``contrast``: its typical TE/TR/TI, modality and body part in the
        training data unless ``fields`` gives them, the label names ``structures``, other fields (``plane``, ...)
        as given; a field without a value drops its part, as in training."""
        if self.prompts is None:
            raise ConfigError(f"{self.bundle}: the bundle records no prompt template")
        from radlens.data.generation_prompts import MODALITY_WORDS

        values = {**self.contrast_fields.get(contrast, {}), "contrast": contrast, **fields, "structures": structures or []}
        if not values.get("modality") and self.preprocessing.get("modality"):
            values["modality"] = MODALITY_WORDS.get(self.preprocessing["modality"], self.preprocessing["modality"])
        return self.prompts.render(values)


def _index(bundle: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    from radlens.models.bundle import read_index, resolve_bundle

    folder = resolve_bundle(bundle)
    return folder, read_index(folder)


def load_part(bundle: str | os.PathLike[str], part: str) -> nn.Module:
    """One component (``vae``, ``unet``, ``text``, ``controlnet``) of a VAE, LDM or ControlNet bundle (or run folder)."""
    from radlens.models.bundle import load_component

    if part not in PARTS:
        raise ConfigError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    folder, index = _index(bundle)
    components = index["components"]
    name = "model" if part == "vae" and components == {"model": KINDS["vae"]} else part
    if name not in components:
        raise InputError(folder, f"the bundle has no {part} (it holds {', '.join(f'{k}: {v}' for k, v in components.items())})")
    if part in KINDS and components[name] != KINDS[part]:
        raise InputError(folder, f"its {name} is a {components[name]}, not a {KINDS[part]}")
    return load_component(folder / name)


def check_fit(vae: LatentAutoencoder, unet: DiffusionUNet, text: nn.Module | None, controlnet: MaskControlNet | None,
              image_shape: tuple[int, ...], where: str) -> None:
    """ConfigError (naming ``where``) unless the parts fit together on images of ``image_shape``."""
    latent = vae.latent_shape(image_shape)
    unet.check_latents(latent[0], latent[1:], where)
    width = getattr(text, "width", None)
    if text is not None and unet.cross_attention_dim != width:
        raise ConfigError(f"{where}: the text tower is {width} wide but the UNet cross-attends to {unet.cross_attention_dim}")
    if controlnet is not None:
        problems = controlnet.mismatch(unet)
        if controlnet.mask_downsample_factor != vae.downsample_factor:
            problems.append(f"the ControlNet embeds masks down {controlnet.mask_downsample_factor}x but the autoencoder "
                            f"down-samples {vae.downsample_factor}x")
        if problems:
            raise ConfigError(f"{where}: the ControlNet does not fit the UNet: {'; '.join(problems)}")


def load_generator(bundle: str | os.PathLike[str], ldm: str | os.PathLike[str] | None = None,
                   vae: str | os.PathLike[str] | None = None) -> Generator:
    """The :class:`Generator` of an LDM or ControlNet bundle (or run folder), in eval mode with
    every parameter frozen; ``ldm``/``vae``: take the UNet and text tower / the autoencoder from
    those bundles instead (checked, see the module docstring)."""
    from radlens.data.generation_prompts import PromptTemplate

    folder, index = _index(bundle)
    components = index["components"]
    if "unet" not in components:
        raise InputError(folder, f"not an LDM or ControlNet bundle (it holds {', '.join(f'{k}: {v}' for k, v in components.items())}); "
                                 "sampling needs the bundle of `radlens train ldm` or `radlens train controlnet`")
    unet, text = load_part(folder, "unet"), load_part(folder, "text")
    controlnet = load_part(folder, "controlnet") if "controlnet" in components else None
    where = str(folder)
    if ldm is not None:
        ldm_folder, _ = _index(ldm)
        other = load_part(ldm_folder, "unet")
        if controlnet is not None and weights_digest(other) != weights_digest(unet):
            raise ConfigError(f"{folder}: its ControlNet was trained on another UNet than the one in {ldm_folder} "
                              "(different weights); use the LDM bundle it was trained from")
        unet, text, where = other, load_part(ldm_folder, "text"), f"{folder} with {ldm_folder}"
    autoencoder = load_part(vae if vae is not None else folder, "vae")
    if vae is not None:
        where = f"{where} with the VAE of {_index(vae)[0]}"
    extra = index.get("extra") or {}
    shape = (index.get("preprocessing") or {}).get("array_shape")
    if not shape:
        raise InputError(folder, "the bundle records no image shape (preprocessing.array_shape)")
    image_shape = tuple(int(s) for s in shape)
    check_fit(autoencoder, unet, text, controlnet, image_shape, where)
    for part in (autoencoder, unet, text, controlnet):
        if part is not None:
            part.eval().requires_grad_(False)
    prompts = extra.get("prompts") or {}
    return Generator(
        vae=autoencoder, unet=unet, text=text, controlnet=controlnet,
        prompts=PromptTemplate.from_dict(prompts) if prompts.get("template") else None, image_shape=image_shape,
        labels={int(k): str(v) for k, v in (prompts.get("labels") or {}).items()},
        contrast_fields=dict(prompts.get("contrast_fields") or {}), bundle=folder, extra=extra,
        preprocessing=dict(index.get("preprocessing") or {}),
    )
