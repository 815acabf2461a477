"""Model bundles: one folder format for every model, single- or multi-component (the diffusers
pipeline-folder idea), with the preprocessing that the weights expect.

Layout::

    BUNDLE/
      bundle.json             format, radlens version, components {name: kind}, preprocessing, extra
      <component>/config.json         the component's config (kind + constructor arguments)
      <component>/model.safetensors   its weights (never pickled)
      <component>/files/...           the component's own files (a text tower saved alone: its tokenizer)
      <component>/<argument>/...      files of nested components (a text tower's tokenizer)

A model saved alone is the component ``model``. Loading builds each component from its config
(files from the bundle, never from the hub or the packaged original) and loads its weights strictly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radlens.errors import ConfigError, InputError

FORMAT = "radlens-bundle"
FORMAT_VERSION = 2
INDEX = "bundle.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SINGLE = "model"


def save_bundle(
    models: Any,
    folder: str | os.PathLike[str],
    preprocessing: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one component (``models``: a component module) or several (a name -> module mapping)
    as a bundle folder, atomically: an existing bundle is replaced only once the new one is complete.

    Only radlens' own files are ever replaced or removed (:func:`radlens.common.atomic.staged_output`):
    a non-empty folder that is not a radlens output is refused. A bundle saved before output folders
    carried a marker (it has a radlens ``bundle.json``) is written into file by file, deleting nothing.

    ``preprocessing`` (what inputs must look like) and ``extra`` (e.g. run info) must be JSON-able.
    """
    from safetensors.torch import save_model

    from radlens import __version__
    from radlens.common.atomic import read_marker, staged_output, write_json_atomic
    from radlens.models.components import save_files

    components = dict(models) if isinstance(models, Mapping) else {SINGLE: models}
    for name, module in components.items():
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or name in (INDEX, "..") or name.startswith("."):
            raise ConfigError(f"component name {name!r}: use letters, digits, '_', '-' and '.' (it names a folder)")
        if not isinstance(getattr(module, "config", None), dict) or "kind" not in module.config:
            raise ConfigError(f"component {name!r} ({type(module).__name__}) is not a registered component kind")
    legacy = read_marker(folder) is None and _is_bundle_index(Path(folder) / INDEX)
    with staged_output(folder, overwrite=legacy, command="save bundle") as tmp:
        for name, module in components.items():
            sub = tmp / name
            sub.mkdir()
            write_json_atomic(sub / CONFIG, module.config)
            save_model(module, str(sub / WEIGHTS))
            save_files(module, sub)
        write_json_atomic(tmp / INDEX, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "radlens_version": __version__,
            "components": {name: module.config["kind"] for name, module in components.items()},
            "preprocessing": preprocessing or {}, "extra": extra or {},
        })
    return Path(folder)


def _is_bundle_index(path: Path) -> bool:
    """Whether ``path`` is a radlens bundle index (so its folder is a bundle radlens wrote)."""
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("format") == FORMAT


def read_index(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A bundle's ``bundle.json``, checked to be a radlens bundle this version reads."""
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(Path(folder), f"not a radlens model bundle (no readable {INDEX}: {err})") from err
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise InputError(path, f"not a radlens bundle index (format {index.get('format') if isinstance(index, dict) else None!r})")
    if not isinstance(index.get("format_version", 0), int):
        raise InputError(path, f"format_version must be an int, got {index['format_version']!r}")
    if index.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"bundle format {index['format_version']} is newer than this radlens reads")
    if not isinstance(index.get("components"), dict) or not index["components"]:
        raise InputError(path, "the index names no components")
    return index


def resolve_bundle(bundle_or_run: str | os.PathLike[str]) -> Path:
    """A bundle folder: the given one, or a run folder's ``best/`` (``last/`` when there is no best)."""
    path = Path(bundle_or_run)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / INDEX).is_file():
            return candidate
    raise InputError(path, "neither a model bundle nor a run folder with best/ or last/ bundles")


def load_component(folder: Path) -> Any:
    """One component folder: built from its config, weights loaded strictly from safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_safetensors

    from radlens.models.components import build

    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(folder / CONFIG, f"not a readable component config ({err})") from err
    if not isinstance(config, dict):
        raise InputError(folder / CONFIG, "a component config must be a JSON object")
    try:
        module = build(config, folder)
    except (ConfigError, TypeError) as err:  # TypeError: a value of the wrong type for its constructor
        raise InputError(folder / CONFIG, str(err)) from err
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise InputError(weights, "bundle component has no model.safetensors")
    try:
        load_safetensors(module, str(weights), strict=True)
    except (RuntimeError, SafetensorError) as err:
        raise InputError(weights, f"weights do not match the component's config ({err})") from err
    return module.eval()


def load_bundle(folder: str | os.PathLike[str]) -> Any:
    """A bundle's model in eval mode: the component itself for a single-component bundle, else a
    ``torch.nn.ModuleDict`` of its components. ``.preprocessing`` and ``.extra`` come from the index."""
    from torch import nn

    folder = Path(folder)
    index = read_index(folder)
    loaded = {name: load_component(folder / name) for name in index["components"]}
    model: Any = loaded[SINGLE] if list(loaded) == [SINGLE] else nn.ModuleDict(loaded).eval()
    model.preprocessing = index.get("preprocessing") or {}
    model.extra = index.get("extra") or {}
    return model


def load_model(name_or_path: str | os.PathLike[str], kind: str | tuple[str, ...] | None = None) -> Any:
    """A model from a bundle folder (or a run folder: its ``best/``), a registry name or JSON path (fresh
    init), or a Hugging Face Hub id.

    ``kind`` (one or several kinds or families, e.g. ``"segmenter"``) refuses a model of another kind, naming
    what was found. A hub id
    (``owner/name``) is downloaded with ``huggingface_hub.snapshot_download`` (bundle files only;
    honours ``HF_HUB_OFFLINE`` and the local cache).
    """
    from radlens.models.registry import build_model, config_files

    path = Path(name_or_path)
    name = str(name_or_path)
    if path.is_dir():
        model = load_bundle(resolve_bundle(path))
    elif name in config_files() or (path.suffix == ".json" and path.is_file()):
        model = build_model(name)
    elif name.count("/") != 1 or path.exists():
        raise ConfigError(f"{name!r} is not a bundle folder, a registry name ({', '.join(config_files())}) or a hub id")
    else:
        from huggingface_hub import snapshot_download

        try:
            local = snapshot_download(repo_id=name, allow_patterns=[INDEX, "*/*"])
        except Exception as err:  # hub errors come in many classes (offline, not found, auth)
            raise InputError(name, f"cannot fetch the bundle from the Hugging Face Hub ({err})") from err
        model = load_bundle(local)
    wanted = (kind,) if isinstance(kind, str) else kind
    found = getattr(model, "config", {}).get("kind")
    if wanted and found not in wanted and _family(found) not in wanted:
        raise InputError(name, f"a {found or 'multi-component'} model, but a {' or '.join(wanted)} model is needed here")
    return model


def _family(kind: str | None) -> str | None:
    """The family of a registered component kind (None for an unknown kind or a multi-component model)."""
    from radlens.models.components import kinds

    known = kinds().get(kind or "")
    return known.family if known is not None else None
