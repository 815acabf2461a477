"""Any image model radlens has as a slice encoder: ``(B, C, H, W)`` -> ``(B, D)`` features, with a content hash.

- a CLIP bundle (or a ClassFine bundle's CLIP): the image tower's pooled features, before the
  projection (``features="pooled"``), or the L2-normalised projected embedding (``"projected"``);
- a model with ``encode(images)``, such as a MoCo/LeCL bundle (kind ``moco``): ``encode``;
- a plain image encoder (kinds of the ``image encoder`` family: ``vit``, ``resnet``, ``swin``,
  ``gated_cnn``, ...): its output; from a registry name or JSON config it is freshly initialised
  with a given seed (the random-init baseline).

The hash is sha256 over a bundle folder's files, or over the config and state dict of a model
built from a registry name or fetched by hub id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

Features = Literal["pooled", "projected"]


@dataclass
class SliceEncoder:
    """An image model as a function of ``(B, C, H, W)`` slices to ``(B, D)`` features, with its provenance."""

    module: Any  # the loaded model (what was hashed); ``encode`` runs (part of) it
    encode: Callable[[torch.Tensor], torch.Tensor]
    name: str  # bundle folder (absolute), registry name / JSON path, or hub id
    kind: str
    features: str  # "pooled", "projected", "encode" or "output"
    in_channels: int | None
    input_shape: tuple[int, ...] | None  # spatial, without the channel
    preprocessing: dict[str, Any]
    sha256: str
    seed: int | None


def bundle_sha256(folder: str | os.PathLike[str]) -> str:
    """sha256 over every file of a bundle folder: relative path and bytes, in sorted path order
    (not the output marker, which records when the bundle was written)."""
    from radlens.common.atomic import MARKER

    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / MARKER):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def state_sha256(module: Any) -> str:
    """sha256 over a model's config (JSON) and state dict (names, dtypes, shapes, bytes)."""
    import torch

    digest = hashlib.sha256(json.dumps(getattr(module, "config", None), sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_slice_encoder(name_or_path: str | os.PathLike[str], features: Features = "pooled", seed: int = 0) -> SliceEncoder:
    """A slice encoder (eval mode) from a bundle or run folder, a registry name / JSON config (fresh
    weights drawn with ``seed``), or a hub id; InputError naming it when it is not an image model."""
    import torch

    from radlens.models.bundle import load_model, resolve_bundle
    from radlens.models.components import kinds
    from radlens.models.registry import config_files

    if features not in ("pooled", "projected"):
        raise ConfigError(f"features must be 'pooled' or 'projected', got {features!r}")
    path, used_seed = Path(name_or_path), None
    if path.is_dir():
        folder = resolve_bundle(path).resolve()
        name, model, sha = str(folder), load_model(folder), bundle_sha256(folder)
    elif str(name_or_path) in config_files() or (path.suffix == ".json" and path.is_file()):
        name = str(name_or_path)
        with torch.random.fork_rng(devices=[]):  # a fresh init, named by its seed; the caller's RNG is left alone
            torch.manual_seed(seed)
            model = load_model(name)
        used_seed, sha = seed, state_sha256(model)
    else:  # a hub id: a downloaded bundle, hashed by its weights
        name = str(name_or_path)
        model = load_model(name)
        sha = state_sha256(model)
    model = model.eval()
    preprocessing = dict(getattr(model, "preprocessing", None) or {})
    config = getattr(model, "config", None)
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind == "classfine":
        model, kind = model.clip, "clip"
    if features == "projected" and kind != "clip":
        raise ConfigError(f"features='projected' needs a CLIP bundle; {name} is a {kind or 'multi-component'} model")
    if kind == "clip":
        encode, which, tower = (model.image, "pooled", model.image) if features == "pooled" else \
            (model.encode_image, "projected", model.image)
    elif callable(getattr(model, "encode", None)):
        encode, which, tower = model.encode, "encode", model
    elif kind in kinds() and kinds()[kind].family == "image encoder":
        encode, which, tower = model, "output", model
    else:
        found = kind or "multi-component (" + ", ".join(getattr(model, "keys", lambda: [])()) + ")"
        raise InputError(name, f"a {found} model is not an image model: extract needs a CLIP bundle, a model with "
                               "encode(images) (moco) or an image encoder (vit, resnet, swin, gated_cnn, ...)")
    geometry = next((m for m in tower.modules() if hasattr(m, "in_channels") and hasattr(m, "input_shape")), None)
    return SliceEncoder(
        module=model, encode=encode, name=name, kind=str(kind), features=which,
        in_channels=int(geometry.in_channels) if geometry is not None else None,
        input_shape=tuple(int(s) for s in geometry.input_shape) if geometry is not None else None,
        preprocessing=preprocessing, sha256=sha, seed=used_seed,
    )
