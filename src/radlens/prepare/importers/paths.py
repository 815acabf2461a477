"""The files a source table lists (M3D's ``dataset.json``, a CSV): kept inside the source folder, named
relative to it, and grouped into patients.

A listed path is relative to the source folder or absolute inside it; a path that leaves the folder
(``..`` anywhere in it, or an absolute path elsewhere) is refused with an error naming the table and
the row, before any work, and tables only ever record the relative path. The check is on the path
as written: a symbolic link inside the folder is followed, like any other file there.

Patients (``PrepareConfig.patient_from``), for samples the source gives no patient id: ``folder``
(the folder holding the image; an image directly in the source folder is its own patient),
``parent`` (the folder above that one, e.g. ``<patient>/<series>/img.npy``), or a regular expression
searched in the relative path whose group ``patient`` (else its first group, else the whole match)
is the patient id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from radlens.errors import ConfigError, InputError

PatientRule = Callable[[str], "str | None"]


def listed_path(root: Path, raw: object, table: Path, where: str) -> tuple[Path, str]:
    """``(absolute path, POSIX path relative to root)`` of a path the table lists at ``where``.

    InputError naming ``table`` and ``where`` when the value is not a path or leaves ``root``.
    """
    text = "" if raw is None else str(raw).strip()
    if not text or text.lower() == "nan":
        raise InputError(table, f"{where}: empty path")
    path = Path(text)
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        raise InputError(table, f"{where}: {text!r} goes up with '..'; listed files must lie inside {root}")
    if path.is_absolute():
        for candidate in (Path(os.path.normpath(path)), path.resolve()):
            if candidate.is_relative_to(root):
                rel = candidate.relative_to(root)
                break
        else:
            raise InputError(table, f"{where}: absolute path {text!r} is outside the source folder {root}")
    else:
        rel = Path(os.path.normpath(path))
    if rel == Path("."):
        raise InputError(table, f"{where}: {text!r} names the source folder itself, not a file")
    return root / rel, rel.as_posix()


def stem(rel: str) -> str:
    """``rel`` without the file's suffix (``.nii.gz`` counts as one): ``a/b.png`` -> ``a/b``."""
    path = PurePosixPath(rel)
    name = path.name.removesuffix(".nii.gz") if path.name.endswith(".nii.gz") else path.stem
    return (path.parent / name).as_posix() if path.parent != PurePosixPath(".") else name


def patient_rule(rule: str) -> PatientRule:
    """The function ``relative image path -> patient id (None: no match)`` of a ``patient_from`` value.

    ConfigError for a pattern that is not a regular expression.
    """
    if rule == "folder":
        return lambda rel: _flat(PurePosixPath(rel).parent.as_posix()) if "/" in rel else _flat(stem(rel))
    if rule == "parent":
        return lambda rel: _flat(PurePosixPath(rel).parent.parent.as_posix()) if rel.count("/") >= 2 else None
    try:
        pattern = re.compile(rule)
    except re.error as err:
        raise ConfigError(f"patient_from must be 'folder', 'parent' or a regular expression; {rule!r}: {err}") from None

    def by_pattern(rel: str) -> str | None:
        match = pattern.search(rel)
        if match is None:
            return None
        if "patient" in pattern.groupindex:
            found = match.group("patient")
        else:
            found = match.group(1) if pattern.groups else match.group(0)
        return _flat(found) if found else None

    return by_pattern


def patient_of(rule: PatientRule, rule_text: str, rel: str, table: Path, where: str) -> str:
    """The patient of the image ``rel`` by ``rule``, or InputError naming the table row it fails for."""
    patient = rule(rel)
    if patient is None:
        need = "a folder above the image's own" if rule_text == "parent" else "a match"
        raise InputError(table, f"{where}: patient_from={rule_text!r} finds no patient in {rel!r} (needs {need})")
    return patient


def _flat(text: str) -> str:
    return text.strip("/").replace("/", "_")
