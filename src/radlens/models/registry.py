"""Named CLIP architecture configs (JSON) and the builder that turns one into a model.

Built-in configs live in ``radlens/models/configs/*.json``; users add their own JSON files in a
folder named by ``RADLENS_MODEL_CONFIGS`` (several folders separated by ``os.pathsep``; a user
file shadows a built-in of the same name) or pass a file path / dict to :func:`build_clip`.
A config is ``{"image": {...}, "text": {...}, "embed_dim": int, ...}``; see the built-ins.
This module imports torch only inside functions, so listing models stays fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    from radlens.models.clip import CLIPModel

BUILTIN_DIR = Path(__file__).parent / "configs"
ENV_VAR = "RADLENS_MODEL_CONFIGS"
TOP_KEYS = {"name", "description", "notes", "image", "text", "embed_dim", "init_temperature", "max_logit_scale",
            "gradient_checkpointing"}
IMAGE_KEYS = {
    "vit": {"kind", "input_shape", "patch_size", "in_channels", "hidden_size", "mlp_dim", "num_layers", "num_heads",
            "pooling", "dropout", "qkv_bias", "sdpa"},
    "resnet": {"kind", "input_shape", "depth", "in_channels", "width_factor", "stem_stride"},
}
TEXT_KEYS = {"kind", "path_or_id", "hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size",
             "lowercase", "context_length", "pooling", "on_overflow", "trainable_layers"}


def config_files() -> dict[str, Path]:
    """Registry name -> JSON file, built-ins first, then the folders in ``RADLENS_MODEL_CONFIGS``."""
    folders = [BUILTIN_DIR] + [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    files: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise InputError(folder, f"{ENV_VAR} names a folder that does not exist")
        files.update({f.stem: f for f in sorted(folder.glob("*.json"))})
    return files


def get_config(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """A validated config dict from a registry name or a JSON file path."""
    path = Path(name_or_path)
    if not path.is_file():
        files = config_files()
        if str(name_or_path) not in files:
            raise ConfigError(f"unknown model {str(name_or_path)!r}; known: {', '.join(sorted(files))} (or a .json path)")
        path = files[str(name_or_path)]
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a readable JSON model config ({err})") from err
    config.setdefault("name", path.stem)
    try:
        validate_config(config)
    except ConfigError as err:
        raise InputError(path, str(err)) from err
    return config


def validate_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for a config that cannot build (unknown keys, shapes, kinds), without torch."""
    from radlens.models.image import validate_image_config
    from radlens.models.text import validate_text_config

    _check_keys("", config, TOP_KEYS)
    image, text = config.get("image"), config.get("text")
    if not isinstance(image, dict) or not isinstance(text, dict):
        raise ConfigError("a model config needs 'image' and 'text' objects")
    validate_image_config(image)
    _check_keys("image.", image, IMAGE_KEYS[image["kind"]])
    validate_text_config(text)
    _check_keys("text.", text, TEXT_KEYS)
    if not isinstance(config.get("embed_dim"), int) or config["embed_dim"] < 1:
        raise ConfigError(f"embed_dim must be a positive int, got {config.get('embed_dim')!r}")


def _check_keys(prefix: str, spec: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed: {', '.join(sorted(allowed))}")


def build_clip(config: dict[str, Any] | str | os.PathLike[str], texts: Iterable[str] | None = None) -> CLIPModel:
    """A freshly initialised (text tower: pretrained where the config says so) CLIPModel.

    ``config`` is a dict, a registry name or a JSON path. ``texts`` (e.g. the training captions)
    trains the WordPiece vocabulary of a from-scratch text tower.
    """
    from radlens.models.clip import CLIPModel
    from radlens.models.image import build_image_encoder
    from radlens.models.text import build_text_encoder

    config = dict(config) if isinstance(config, dict) else get_config(config)
    validate_config(config)
    model = CLIPModel(
        build_image_encoder(config["image"]),
        build_text_encoder(config["text"], texts),
        embed_dim=config["embed_dim"],
        init_temperature=config.get("init_temperature", 0.07),
        max_logit_scale=config.get("max_logit_scale", 100.0),
        config=config,
    )
    model.set_gradient_checkpointing(bool(config.get("gradient_checkpointing", False)))
    return model


def count_params(config: dict[str, Any]) -> dict[str, int | None]:
    """Parameter counts ``{"image", "text", "total"}`` without allocating weights (meta device).

    ``text`` (and ``total``) is None for a hub text encoder whose config is not on this machine;
    a scratch tower is counted at its configured maximum ``vocab_size``.
    """
    import torch

    from radlens.models.image import build_image_encoder

    with torch.device("meta"):
        image = build_image_encoder(config["image"])
        n_image = _n(image) + image.width * config["embed_dim"]
        text_config = _text_model_config(config["text"])
        n_text = None
        if text_config is not None:
            from transformers import AutoModel

            text_model = AutoModel.from_config(text_config)
            pooler = getattr(text_model, "pooler", None)
            n_text = _n(text_model) - (_n(pooler) if pooler is not None else 0)
            n_text += text_config.hidden_size * config["embed_dim"]
    return {"image": n_image, "text": n_text, "total": None if n_text is None else n_image + n_text + 1}


def _n(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _text_model_config(spec: dict[str, Any]) -> Any:
    """The transformers config of a text tower, or None when it would need the network."""
    from transformers import AutoConfig

    from radlens.models.text import pretrained_source, scratch_model_config

    if spec["kind"] == "scratch":
        return scratch_model_config(spec, spec.get("vocab_size", 4096))
    source = pretrained_source(spec)
    try:
        return AutoConfig.from_pretrained(source, local_files_only=True)
    except OSError:
        return None


def list_models() -> list[dict[str, Any]]:
    """One row per registry config: name, dims, input shape (C, *spatial), params, text encoder."""
    rows = []
    for name in config_files():
        config = get_config(name)
        image, text = config["image"], config["text"]
        shape = [image.get("in_channels", 1), *image["input_shape"]]
        encoder = f"{image['kind']} patch {'x'.join(map(str, image['patch_size']))}" if image["kind"] == "vit" else (
            f"resnet{image.get('depth', 18)} x{image.get('width_factor', 1.0):g} width, "
            f"stem stride {image.get('stem_stride', 1)}"
        )
        text_name = {"scratch": "scratch BERT", "minilm": "MiniLM-L6 (packaged)"}.get(text["kind"], text.get("path_or_id"))
        rows.append({
            "name": name,
            "dims": len(image["input_shape"]),
            "input_shape": shape,
            "image_encoder": encoder,
            "text_encoder": f"{text_name}, ctx {text.get('context_length', 128)}",
            "params": count_params(config),
            "description": config.get("description", ""),
        })
    return rows


def _millions(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}M"


def models() -> int:
    """List the registered CLIP architectures (name, dims, input shape, approx. params, text encoder).

    Add your own JSON configs in a folder named by the RADLENS_MODEL_CONFIGS environment variable.
    """
    rows = list_models()
    header = ("name", "dims", "input (C,X,Y[,Z])", "image encoder", "params img/text/total", "text encoder")
    table = [header] + [
        (
            r["name"],
            f"{r['dims']}D",
            "x".join(map(str, r["input_shape"])),
            r["image_encoder"],
            "/".join(_millions(r["params"][k]) for k in ("image", "text", "total")),
            r["text_encoder"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("(? = hub text encoder not downloaded; params counted without it)")
    return 0
