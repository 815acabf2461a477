"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

An interrupted command never leaves a half-written file under its final name, so a rerun can
tell finished outputs from unfinished ones.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_target(path: Path) -> tuple[int, str]:
    """An open temporary file (descriptor, name) beside ``path``, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``path`` and rename it into place."""
    fd, tmp = atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
