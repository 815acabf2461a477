"""Model bundles: a folder that carries a trained CLIP model with everything needed to use it.

Layout::

    BUNDLE/
      config.json          format, radlens version, architecture, preprocessing, tokenizer info, extra
      model.safetensors    all weights (never pickled)
      text/                the text tower's transformers config.json + tokenizer files

Loading never unpickles and never needs the text tower's original source (hub id or packaged
MiniLM): the architecture comes from ``text/config.json`` and the weights from the safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    from radlens.models.clip import CLIPModel

FORMAT = "radlens-clip-bundle"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TEXT_DIR = "text"


def save_bundle(
    model: CLIPModel,
    folder: str | os.PathLike[str],
    preprocessing: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a bundle folder, atomically: a temp folder beside it, then a rename.

    An existing bundle at ``folder`` is replaced only once the new one is complete.
    ``preprocessing`` (what inputs must look like) and ``extra`` (e.g. run info) must be JSON-able.
    """
    from safetensors.torch import save_model

    from radlens import __version__

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        text = model.text
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "radlens_version": __version__,
            "architecture": model.config,
            "input_shape": list(model.input_shape),
            "embed_dim": model.embed_dim,
            "preprocessing": preprocessing,
            "tokenizer": {
                "folder": TEXT_DIR,
                "class": type(text.tokenizer).__name__,
                "vocab_size": len(text.tokenizer),
                "context_length": text.context_length,
                "on_overflow": text.on_overflow,
                "pooling": text.pooling,
            },
            "extra": extra or {},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        text.model.config.save_pretrained(tmp / TEXT_DIR)
        text.tokenizer.save_pretrained(tmp / TEXT_DIR)
        save_model(model, str(tmp / WEIGHTS))
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; a previous ``folder`` is moved aside first and removed after."""
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def read_versioned_config(folder: str | os.PathLike[str], fmt: str, max_version: int, kind: str) -> dict[str, Any]:
    """A bundle folder's ``config.json``, checked to have format ``fmt`` at a version this radlens reads.

    Shared by every radlens bundle (CLIP, report labeller); ``kind`` names it in errors.
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"not a readable {kind} bundle config ({err})") from err
    if config.get("format") != fmt:
        raise InputError(path, f"not a radlens {kind} bundle (format {config.get('format')!r}, expected {fmt!r})")
    if config.get("format_version", 0) > max_version:
        raise InputError(path, f"bundle format {config['format_version']} is newer than this radlens reads")
    return config


def read_bundle_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The bundle's ``config.json``, checked to be a radlens CLIP bundle."""
    return read_versioned_config(folder, FORMAT, FORMAT_VERSION, "CLIP")


def load_bundle(folder: str | os.PathLike[str]) -> CLIPModel:
    """A CLIPModel from a local bundle folder, weights from safetensors only."""
    from safetensors.torch import load_model as load_safetensors
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from radlens.models.clip import CLIPModel
    from radlens.models.image import build_image_encoder
    from radlens.models.text import encoder_from_parts

    folder = Path(folder)
    config = read_bundle_config(folder)
    arch = config["architecture"]
    text_dir = folder / config["tokenizer"]["folder"]
    try:
        text_model = AutoModel.from_config(AutoConfig.from_pretrained(text_dir, local_files_only=True))
        tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(text_dir, f"bundle text tower cannot be read ({err})") from err
    model = CLIPModel(
        build_image_encoder(arch["image"]),
        encoder_from_parts(text_model, tokenizer, arch["text"]),
        embed_dim=arch["embed_dim"],
        init_temperature=arch.get("init_temperature", 0.07),
        max_logit_scale=arch.get("max_logit_scale", 100.0),
        config=arch,
    )
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise InputError(weights, "bundle has no model.safetensors")
    try:
        load_safetensors(model, str(weights), strict=True)
    except RuntimeError as err:
        raise InputError(weights, f"weights do not match the bundle's architecture ({err})") from err
    model.preprocessing = config.get("preprocessing", {})
    model.set_gradient_checkpointing(bool(arch.get("gradient_checkpointing", False)))
    return model.eval()


def load_model(name_or_path: str | os.PathLike[str]) -> CLIPModel:
    """A CLIPModel from a bundle folder, a registry name (fresh init) or a Hugging Face Hub id.

    A hub id (``owner/name``) is downloaded with ``huggingface_hub.snapshot_download`` (only the
    bundle files; honours ``HF_HUB_OFFLINE`` and the local cache).
    """
    from radlens.models.registry import build_clip, config_files

    path = Path(name_or_path)
    if path.is_dir():
        return load_bundle(path)
    name = str(name_or_path)
    if name in config_files() or (path.suffix == ".json" and path.is_file()):
        return build_clip(name)
    if name.count("/") != 1 or path.exists():
        raise ConfigError(f"{name!r} is not a bundle folder, a registry name ({', '.join(config_files())}) or a hub id")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(repo_id=name, allow_patterns=["config.json", WEIGHTS, f"{TEXT_DIR}/*"])
    except Exception as err:  # hub errors come in many classes (offline, not found, auth)
        raise InputError(name, f"cannot fetch the bundle from the Hugging Face Hub ({err})") from err
    return load_bundle(local)
