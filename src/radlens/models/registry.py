"""Named model configs (JSON) of any component kind, and the builder that turns one into a model.

Built-in configs live in ``radlens/models/configs/*.json``; users add their own JSON files in a
folder named by ``RADLENS_MODEL_CONFIGS`` (several folders separated by ``os.pathsep``; a user
file shadows a built-in of the same name) or pass a file path / dict to :func:`build_model`.
A config is a component config (:mod:`radlens.models.components`): ``{"kind": ..., <constructor
arguments>}``, plus the descriptive keys ``description`` and ``notes``. A config without ``kind``
that has ``image`` and ``text`` is a CLIP config (the form radlens wrote before kinds existed).
This module imports torch only inside functions, so importing it stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from radlens.errors import ConfigError, InputError

BUILTIN_DIR = Path(__file__).parent / "configs"
ENV_VAR = "RADLENS_MODEL_CONFIGS"
META_KEYS = ("name", "description", "notes")


def config_files() -> dict[str, Path]:
    """Registry name -> JSON file, built-ins first, then the folders in ``RADLENS_MODEL_CONFIGS``."""
    folders = [BUILTIN_DIR] + [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    files: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise InputError(folder, f"{ENV_VAR} names a folder that does not exist")
        files.update({f.stem: f for f in sorted(folder.glob("*.json"))})
    return files


def _with_kind(config: dict[str, Any]) -> dict[str, Any]:
    if "kind" not in config and "image" in config and "text" in config:
        return {"kind": "clip", **config}
    return config


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The component config of a registry config: its descriptive keys left out."""
    return {k: v for k, v in _with_kind(config).items() if k not in META_KEYS}


def get_config(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checked config dict (``name`` set) from a registry name or a JSON file path."""
    from radlens.models.components import check_config

    path = Path(name_or_path)
    if not path.is_file():
        files = config_files()
        if str(name_or_path) not in files:
            raise ConfigError(f"unknown model {str(name_or_path)!r}; known: {', '.join(sorted(files))} (or a .json path)")
        path = files[str(name_or_path)]
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable JSON model config ({err})") from err
    if not isinstance(config, dict):
        raise InputError(path, "a model config must be a JSON object")
    config = _with_kind(config)
    config.setdefault("name", path.stem)
    try:
        check_config(architecture(config))
    except ConfigError as err:
        raise InputError(path, str(err)) from err
    return config


def build_model(config: dict[str, Any] | str | os.PathLike[str], **runtime: Any) -> Any:
    """A freshly initialised model of any kind from a dict, a registry name or a JSON path.

    ``runtime`` goes to the components' keyword-only arguments, e.g. ``texts`` (the training
    captions) trains the WordPiece vocabulary of a from-scratch text tower. A config that cannot
    build is a ConfigError (an InputError naming the file when it came from one).
    """
    from radlens.models.components import build

    source = None if isinstance(config, dict) else str(config)
    spec = architecture(dict(config) if isinstance(config, dict) else get_config(config))
    try:
        return build(spec, **runtime)
    except ConfigError as err:
        path = Path(source) if source and Path(source).is_file() else config_files().get(source or "")
        if path is None:
            raise
        raise InputError(path, str(err)) from err


def count_params(config: dict[str, Any]) -> dict[str, int | None]:
    """Parameter counts without allocating weights (meta device): ``total`` and one per nested component.

    A nested component that cannot be built here (a hub text tower not on this machine) counts as
    None, and so does ``total`` then.
    """
    import torch

    from radlens.models.components import build

    spec = architecture(config)

    def count(sub: dict[str, Any]) -> int | None:
        try:
            with torch.device("meta"):
                return sum(p.numel() for p in build(sub, weights=False).parameters())
        except InputError:
            return None

    out = {key: count(value) for key, value in spec.items() if isinstance(value, dict) and "kind" in value}
    out["total"] = None if None in out.values() else count(spec)
    return out


def list_models() -> list[dict[str, Any]]:
    """One row per registry config: name, kind, family, input shape (C, *spatial) when it has one, params,
    a one-line description; a config that does not check out gets its error instead."""
    from radlens.models.components import kind_of

    rows = []
    for name, path in config_files().items():
        try:
            config = get_config(path)
        except (ConfigError, InputError) as err:
            rows.append({"name": name, "kind": "?", "family": "?", "input_shape": None, "params": {"total": None},
                         "summary": "", "description": "", "error": str(err)})
            continue
        spec = architecture(config)
        kind = kind_of(spec)
        image = spec.get("image") if isinstance(spec.get("image"), dict) else spec
        shape = image.get("input_shape")
        describe = getattr(kind.cls, "describe", None)
        try:  # a value the constructor refuses (keys were checked above) is listed, not fatal
            params = count_params(spec)
        except ConfigError as err:
            rows.append({"name": name, "kind": kind.name, "family": kind.family, "input_shape": None,
                         "params": {"total": None}, "summary": "", "description": "", "error": f"{path}: {err}"})
            continue
        rows.append({
            "name": name, "kind": kind.name, "family": kind.family,
            "input_shape": [image.get("in_channels", 1), *shape] if shape else None,
            "params": params, "summary": describe(spec) if describe else "",
            "description": config.get("description", ""), "error": None,
        })
    return rows


def _millions(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}M"


def models() -> int:
    """List the registered model configs of every kind (name, kind, input shape, params, summary).

    Add your own JSON configs in a folder named by the RADLENS_MODEL_CONFIGS environment variable.
    Component kinds that configs can use are listed at the end.
    """
    from radlens.models.components import kinds

    header = ("name", "kind", "input (C,X,Y[,Z])", "params (per part/total)", "summary")
    table = [header]
    for r in list_models():
        params = r["params"]
        parts = "/".join(_millions(v) for k, v in params.items() if k != "total")
        table.append((r["name"], r["kind"], "x".join(map(str, r["input_shape"] or [])) or "-",
                      f"{parts}/{_millions(params['total'])}" if parts else _millions(params["total"]),
                      r["summary"] if r["error"] is None else f"invalid: {r['error']}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("(? = not countable here: a hub text tower not downloaded)")
    by_family: dict[str, list[str]] = {}
    for kind in kinds().values():
        by_family.setdefault(kind.family, []).append(kind.name)
    print("component kinds: " + "; ".join(f"{family}: {', '.join(sorted(names))}" for family, names in sorted(by_family.items())))
    return 0
