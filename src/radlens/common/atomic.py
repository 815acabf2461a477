"""Atomic writes: a temporary file (or folder) beside the target, then ``os.replace``.

An interrupted command never leaves a half-written file under its final name, so a rerun can
tell finished outputs from unfinished ones. Every radlens writer goes through :func:`atomic_path`
(files) or :func:`staged_output` (folders).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` (its folder created); on success rename it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def strict_json(obj: Any) -> Any:
    """Replace non-finite floats (e.g. the open last TI bin edge) by the strings "inf"/"-inf"/"nan",
    so JSON files stay valid for strict parsers."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for NumPy scalars/arrays, paths and tuples."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, tuple)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Indented strict JSON (NaN/inf as strings), written atomically."""
    text = json.dumps(strict_json(obj), indent=2, default=json_default, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode())


def write_yaml_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """``data`` as YAML (key order kept), written atomically."""
    import yaml

    write_bytes_atomic(path, yaml.safe_dump(data, sort_keys=False).encode())


def save_array_atomic(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save a memory-mappable ``.npy`` so that a partly written file never has the final name."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def write_parquet_atomic(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv_atomic(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    write_bytes_atomic(path, df.to_csv(index=False).encode())


@contextlib.contextmanager
def staged_output(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename.

    A failure leaves ``out`` as it was (nothing half-written); a previous ``out`` is removed only
    after the new one is in place.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
