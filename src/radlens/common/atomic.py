"""Atomic writes: a temporary file (or folder) beside the target, then ``os.replace``.

An interrupted command never leaves a half-written file under its final name, so a rerun can
tell finished outputs from unfinished ones. Every radlens writer goes through :func:`atomic_path`
(files) or :func:`staged_output` (folders).

Output folders carry a marker (:data:`MARKER`) listing the files radlens wrote there. A command
replaces only those files: nothing else in an output folder is ever deleted, and a non-empty
folder without a marker is written into only when the user asks (``--overwrite``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd


def _new_temp_file(path: Path) -> Path:
    """Create an empty, uniquely named file beside ``path`` with the mode any new file gets (0666
    less the umask). ``tempfile.mkstemp`` would make it 0600, and the rename would keep that:
    reports and tables no one else on the machine could read."""
    while True:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another writer drew the same name: draw again
            continue
        return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file name beside ``path`` (its folder created); on success rename it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
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


MARKER = ".radlens-output.json"
MARKER_FORMAT = "radlens-output"


def _entries(folder: Path) -> tuple[set[str], set[str]]:
    """(files, folders) under ``folder`` as relative POSIX paths; symbolic links are not followed
    (a link, even to a folder, counts as a file)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root, dirnames, filenames in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in list(dirnames):
            if (Path(root) / name).is_symlink():
                dirnames.remove(name)
                files.add((rel / name).as_posix())
            else:
                dirs.add((rel / name).as_posix())
        files.update((rel / name).as_posix() for name in filenames)
    return files, dirs


def read_marker(folder: str | os.PathLike[str]) -> list[str] | None:
    """The files radlens wrote in ``folder`` (its marker's list), or None without a valid marker."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    files = marker.get("files") if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return files


def write_marker(folder: Path, files: set[str], command: str | None) -> None:
    """Record (atomically) that radlens wrote ``files`` in ``folder``, and when and with what command."""
    import radlens

    write_json_atomic(folder / MARKER, {
        "format": MARKER_FORMAT, "radlens_version": radlens.__version__, "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(files - {MARKER}),
    })


def check_output(out: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raise :class:`InputError` unless ``out`` may receive a command's output: missing, an empty
    folder, a folder radlens wrote (it has a marker), or any folder with ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file, not an output folder; choose another output folder")
    if out.is_dir() and not overwrite and read_marker(out) is None and any(out.iterdir()):
        raise InputError(out, "holds files radlens did not write; choose another output folder, or pass "
                              "--overwrite to write radlens' files into it (nothing else is deleted)")


def check_apart(source: str | os.PathLike[str], out: str | os.PathLike[str], what: str = "source") -> None:
    """Raise :class:`ConfigError` unless the output folder ``out`` and ``source`` lie apart.

    ``source`` is a folder or a file (a table: its folder, where the files it lists are, counts).
    An output in, equal to, or around the source folder would write into it, and radlens never
    writes into its inputs (a prepared dataset is an input of the exporters). Call it before
    writing anything, so a refused command leaves nothing behind.
    """
    src = Path(source).resolve()
    folder = src if src.is_dir() or not src.exists() else src.parent
    target = Path(out).resolve()
    if target == folder or folder in target.parents:
        where = "is" if target == folder else "is inside"
        raise ConfigError(f"output {target} {where} the {what} folder {folder}: radlens never writes into its inputs; "
                          "choose an output folder outside it")
    if target in folder.parents:
        raise ConfigError(f"output {target} holds the {what} folder {folder}: radlens never writes around its inputs; "
                          "choose an output folder outside it")


def _inside(folder: Path, rel: str) -> Path | None:
    """``folder / rel`` when ``rel`` is a plain relative path that stays inside ``folder``, else None."""
    path = folder / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or rel in ("", ".", MARKER):
        return None
    if not path.parent.resolve().is_relative_to(folder.resolve()):
        return None
    return path


def _merge(tmp: Path, out: Path, old: list[str], command: str | None) -> None:
    """Move the files of ``tmp`` into ``out`` one by one (each ``os.replace`` is atomic), then remove
    the files of ``old`` (the previous marker's list) that the new output lacks, then write the marker."""
    new, _ = _entries(tmp)
    for rel in sorted(new):
        for parent in [*reversed(Path(rel).parents[:-1]), Path(rel)]:
            dest = out / parent
            want_dir = parent != Path(rel)
            if dest.is_symlink() or not dest.exists():
                continue
            if dest.is_dir() != want_dir:
                raise InputError(dest, f"is a {'file' if want_dir else 'folder'}; radlens would write "
                                       f"{'into it' if want_dir else 'a file there'}: move it, or choose another output folder")
    write_marker(out, set(old) | new, command)  # an interruption below leaves every file it moved listed
    for rel in sorted(new):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    for rel in set(old) - new:
        path = _inside(out, rel)
        if path is None or not (path.is_file() or path.is_symlink()):
            continue
        path.unlink()
        for parent in path.relative_to(out).parents[:-1]:  # folders the stale file leaves empty
            with contextlib.suppress(OSError):
                (out / parent).rmdir()
    write_marker(out, new, command)


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike[str], overwrite: bool = False, command: str | None = None
) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` to write a command's output into; on success, put it in place.

    - ``out`` missing, empty, or holding only files radlens wrote there (its marker lists them): the
      temporary folder replaces it in one rename, as a whole.
    - ``out`` a folder radlens wrote to which the user added files: each new file is moved into
      place (``os.replace``), the files of radlens' previous output that the new one lacks are
      removed, and the user's files are left alone.
    - ``out`` non-empty without a marker: :class:`InputError`, unless ``overwrite``; then the new
      files are moved in as above, replacing same-named files only, deleting nothing.

    The marker (:data:`MARKER`: the files written, ``command``, time) lists only files radlens
    wrote. A failure before the output is complete leaves ``out`` as it was.
    """
    out = Path(os.path.abspath(out))
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        check_output(out, overwrite)  # ``out`` may have changed while the output was computed
        new, _ = _entries(tmp)
        old = read_marker(out)
        present_files, present_dirs = _entries(out) if out.is_dir() else (set(), set())
        ours = set(old or ()) | {MARKER}
        ours_dirs = {p.as_posix() for rel in ours for p in Path(rel).parents[:-1]}
        if present_files <= ours and present_dirs <= ours_dirs:
            write_marker(tmp, new, command)
            previous = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            if out.exists():
                os.replace(out, previous)
            os.replace(tmp, out)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            _merge(tmp, out, old or [], command)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
