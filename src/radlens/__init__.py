"""radlens: learn and use representations of radiology images paired with text.

Heavy libraries (torch, monai, transformers) are imported inside the functions that
need them, so ``import radlens`` and ``radlens --help`` stay fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radlens")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
