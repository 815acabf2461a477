"""Patient identity in folder names: source paths recorded without it.

PACS exports and hand-made trees name folders after patients (``DOE^JOHN/CT_20200131/...``). The
tables record where each series came from (``source_path``, ``failures.csv``), relative to the
source root; before they do, this module takes identity out of those paths:

- **the patient's own folder**: the first folder level (walking down from the root) that holds
  series of one patient only is replaced by that patient's pseudonym; a folder that no readable
  series passes through, beside such patient folders, becomes ``*`` (a patient whose every file
  failed);
- **identity in any name**: the patient's identifying tag values (PatientID, each part of the
  PatientName, birth date, accession number, study/series dates; see
  :data:`radlens.io.phi.IDENTITY_TAGS`) are replaced by ``*`` wherever they occur in the rest
  of the path, ignoring case and separators.

Limits: a folder that groups one patient only but is not the patient's (``CT/DOE`` with one CT
patient) is the one replaced, and the name below it is caught only through the tags; identity
in the names of files that cannot be read at all is not known and stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from radlens.io.phi import REDACTED, redact


@dataclass
class PatientTree:
    """The folders of a source tree that belong to one patient, learned from the readable series.

    Add every series (:meth:`add`) before asking for paths (:meth:`series_path`, :meth:`failure_path`).
    """

    _patients: dict[tuple[str, ...], set[str]] = field(default_factory=dict)
    _tokens: dict[str, frozenset[str]] = field(default_factory=dict)
    _levels: set[tuple[str, ...]] | None = None  # parents of patient folders, computed on first use

    def add(self, folder: str, patient: str, tokens: Iterable[str] = ()) -> None:
        """Record a series of ``patient`` (its pseudonym) in ``folder`` (relative to the root, POSIX)."""
        parts = _parts(folder)
        self._levels = None
        for depth in range(1, len(parts) + 1):
            owners = self._patients.setdefault(parts[:depth], set())
            if len(owners) < 2:
                owners.add(patient)
        self._tokens[patient] = self._tokens.get(patient, frozenset()) | frozenset(tokens)

    def _own(self, node: tuple[str, ...]) -> str | None:
        owners = self._patients.get(node)
        return next(iter(owners)) if owners is not None and len(owners) == 1 else None

    def _is_patient_level(self, parent: tuple[str, ...]) -> bool:
        """Whether a child of ``parent`` is some patient's own folder."""
        if self._levels is None:
            self._levels = {node[:-1] for node in self._patients
                            if self._own(node) is not None and (len(node) == 1 or self._own(node[:-1]) is None)}
        return parent in self._levels

    def _folder(self, parts: tuple[str, ...]) -> tuple[list[str], str | None]:
        """The folder parts with the patient's folder replaced, and whose folder it was."""
        for depth in range(1, len(parts) + 1):
            node = parts[:depth]
            if node not in self._patients:
                if self._is_patient_level(node[:-1]):
                    return [*node[:-1], REDACTED, *parts[depth:]], None
                return list(parts), None
            owner = self._own(node)
            if owner is not None:
                return [*node[:-1], owner, *parts[depth:]], owner
        return list(parts), None

    def series_path(self, path: str, patient: str) -> str:
        """``path`` (a series' folder or file, relative) without the identity of ``patient``."""
        parts = _parts(path)
        folder, _ = self._folder(parts)
        tokens = self._tokens.get(patient, frozenset())
        return "/".join(part if part == patient else redact(part, tokens) for part in folder) or "."

    def failure_path(self, path: str) -> str:
        """The path of a file that could not be read (relative), with known patient folders replaced."""
        parts = _parts(path)
        folder, owner = self._folder(parts[:-1])
        tokens = self._tokens.get(owner, frozenset()) if owner is not None else frozenset()
        return "/".join([*(p if p == owner else redact(p, tokens) for p in folder), redact(parts[-1], tokens)])


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(path).parts if p not in ("", "."))
