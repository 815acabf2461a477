"""Model components (image encoders, text towers, CLIP, probes, the report labeller, MIL heads), the
named-config registry, model bundles, and prompt sets.

The main entry points are importable from here without importing torch up front:
``build_model``, ``list_models``, ``load_model``, ``save_bundle``, ``CLIPModel``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "build_model": "radlens.models.registry",
    "list_models": "radlens.models.registry",
    "get_config": "radlens.models.registry",
    "load_model": "radlens.models.bundle",
    "save_bundle": "radlens.models.bundle",
    "CLIPModel": "radlens.models.clip",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import an entry point's module on first access (keeps ``import radlens.models`` light)."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radlens.models' has no attribute {name!r}")
