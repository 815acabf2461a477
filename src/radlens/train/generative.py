"""What ``radlens train vae``, ``train ldm`` and ``train controlnet`` share: opening the slices, component
configs from the registry, the frozen text tower, the data module, and the checks between a dataset and
a trained autoencoder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError
from radlens.train.generative_config import GenerationDataConfig

if TYPE_CHECKING:
    from radlens.data.generation import ItemSource
    from radlens.data.generation_prompts import PromptBuilder
    from radlens.data.modules import GenerationDataModule
    from radlens.io.prepared import PreparedDataset
    from radlens.models.text_tower import TextTower


def data_checks(data: GenerationDataConfig) -> list[tuple[bool, str]]:
    """The value checks of a data option group (for :func:`radlens.train.config.validate`)."""
    return [(data.batch_size >= 1, f"data.batch_size must be >= 1, got {data.batch_size}"),
            (data.eval_batch_size is None or data.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
            (data.num_workers >= 0, f"data.num_workers must be >= 0, got {data.num_workers}")]


def open_slices(path: str | Path) -> PreparedDataset:
    """A prepared 2D dataset of one slice shape (InputError naming the folder otherwise)."""
    from radlens.io.prepared import PreparedDataset

    prepared = PreparedDataset(path)
    if prepared.dims != 2:
        raise InputError(prepared.path, "the generative pipeline trains on 2D slices: prepare the dataset with --dims 2")
    if prepared.card.get("array_shape") is None:
        raise InputError(prepared.path, "slices of different shapes (card array_shape is null): a batch needs one shape")
    return prepared


def image_shape(prepared: PreparedDataset) -> tuple[int, ...]:
    return tuple(int(s) for s in prepared.card["array_shape"])


def component_spec(name: str, kind: str, **overrides: Any) -> dict[str, Any]:
    """The component config of registry name or JSON file ``name``, which must be of ``kind``, with ``overrides``."""
    from radlens.models.registry import architecture, get_config

    spec = architecture(get_config(name))
    if spec.get("kind") != kind:
        raise ConfigError(f"{name!r} is a {spec.get('kind')} config; a {kind} config is needed here")
    return {**spec, **overrides}


def text_tower(source: str) -> TextTower:
    """The frozen text tower named by ``source``: ``minilm`` (the packaged MiniLM), a radlens bundle holding a
    text tower or a CLIP model (its text tower), or a BERT-family folder (transformers files)."""
    from radlens.models.components import build
    from radlens.models.text_tower import TEXT_KINDS, TextTower

    path = Path(source)
    if source == "minilm":
        tower = build({"kind": "minilm", "trainable_layers": 0})
    elif (path / "bundle.json").is_file() or (path / "best" / "bundle.json").is_file():
        from radlens.models.bundle import load_model

        model = load_model(path)
        tower = model if model.config.get("kind") in TEXT_KINDS else getattr(model, "text", None)
        if not isinstance(tower, TextTower):
            raise InputError(path, f"a {model.config.get('kind')} bundle has no text tower (give a CLIP or text tower bundle)")
    elif (path / "config.json").is_file():
        tower = build({"kind": "pretrained", "path_or_id": str(path), "pooling": "cls", "trainable_layers": 0})
    else:
        raise InputError(path, "not a text tower: use 'minilm', a radlens CLIP/text bundle, or a BERT-family model folder")
    tower.set_trainable_layers(0)
    return tower.eval()


def generation_data(prepared: PreparedDataset, sources: Sequence[ItemSource], data: GenerationDataConfig, seed: int,
                    prompts: PromptBuilder | None = None, prompt_dropout: float = 0.0) -> GenerationDataModule:
    """The data module of a generative command."""
    from radlens.data.modules import GenerationDataModule

    augment = data.augment if data.augment.enabled else None
    module = GenerationDataModule(prepared, sources, data.batch_size, data.eval_batch_size, data.num_workers, prompts,
                                  prompt_dropout, augment, seed)
    if len(module.train_set) < data.batch_size:
        raise ConfigError(f"data.batch_size {data.batch_size} is larger than the {len(module.train_set)} training slices: lower it")
    return module


def load_autoencoder(bundle: str) -> tuple[Any, dict[str, Any]]:
    """The autoencoder of a VAE, LDM or ControlNet bundle (or run folder) and that bundle's preprocessing."""
    from radlens.models.bundle import read_index, resolve_bundle
    from radlens.models.generator import load_part

    return load_part(bundle, "vae"), read_index(resolve_bundle(bundle)).get("preprocessing") or {}


def check_vae_fits_data(vae: Any, pre: dict[str, Any], bundle: str, prepared: PreparedDataset) -> None:
    """InputError when ``prepared`` holds other images than the autoencoder bundle was trained on (``pre``, its
    preprocessing: modality, intensity normalisation), or slices whose sides its down-sampling does not divide."""
    card, where = prepared.card, prepared.path / "dataset.json"
    for key in ("modality", "intensity"):
        if pre.get(key) is not None and card.get(key) is not None and json.dumps(pre[key]) != json.dumps(card[key]):
            raise InputError(where, f"{key} {card[key]!r}, but the autoencoder {bundle} was trained on {pre[key]!r}")
    try:
        vae.latent_shape(image_shape(prepared))
    except ConfigError as err:
        raise InputError(where, f"slices {list(image_shape(prepared))} do not fit the autoencoder {bundle}: {err}") from err
