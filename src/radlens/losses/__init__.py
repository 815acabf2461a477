"""Losses: CLIP/InfoNCE (local + gathered), multi-positive and soft targets.

``ContrastiveLoss`` is importable from here; torch is imported on first access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ContrastiveLoss"]


def __getattr__(name: str) -> Any:
    """Import ``radlens.losses.contrastive`` on first access (keeps ``import radlens.losses`` light)."""
    if name == "ContrastiveLoss":
        return import_module("radlens.losses.contrastive").ContrastiveLoss
    raise AttributeError(f"module 'radlens.losses' has no attribute {name!r}")
