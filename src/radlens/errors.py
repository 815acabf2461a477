"""Errors radlens raises for bad input: each names the file and what is wrong."""

from __future__ import annotations

from os import PathLike


class InputError(ValueError):
    """A file or folder that radlens cannot use, with the reason.

    ``str(err)`` is one line, ``"<path>: <reason>"``, which is what the console and
    ``failures.csv`` show.
    """

    def __init__(self, path: str | PathLike[str] | None, reason: str) -> None:
        self.path = str(path) if path is not None else ""
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class ConfigError(ValueError):
    """A configuration that cannot work, detected before any work starts."""
