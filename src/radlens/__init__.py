"""radlens: learn and use representations of radiology images paired with text.

Heavy libraries (torch, monai, transformers) are imported inside the functions that
need them, so ``import radlens`` and ``radlens --help`` stay fast. The main entry points are
reachable from the top level and load their module on first use:
``radlens.read_volume``, ``radlens.prepare_dataset``, ``radlens.load_model``,
``radlens.train_clip``, ``radlens.embed_volume``.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("radlens")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

_LAZY = {
    "read_volume": "radlens.io.reader",
    "prepare_dataset": "radlens.prepare.pipeline",
    "PreparedDataset": "radlens.io.prepared",
    "load_model": "radlens.models.bundle",
    "build_model": "radlens.models.registry",
    "train_clip": "radlens.train.clip",
    "embed_volume": "radlens.evaluate.embed",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    """Import an entry point's module on first access."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'radlens' has no attribute {name!r}")
