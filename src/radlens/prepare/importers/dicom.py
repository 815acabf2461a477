"""A folder tree of DICOM series: 3D volumes (or 2D slices) with PHI-filtered metadata from the tags.

Series are grouped by SeriesInstanceUID wherever their files lie (a folder holding several
series gives several items). Ids are pseudonyms, never DICOM identifiers: patient
``"p" + sha1(salt + PatientID)[:10]``, study ``"st" + sha1(salt + StudyInstanceUID)[:10]``,
series ``"s" + sha1(salt + SeriesInstanceUID)[:12]``, with ``PrepareConfig.pseudonym_salt``.
The same salt gives the same ids on every run; the DICOM PatientID/PatientName never reach the
tables, the card, the captions or the console.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from radlens.errors import InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

PROTOCOL_LABELS = True
NOTES = (
    "ids are pseudonyms: patient_id = 'p' + sha1(salt + PatientID)[:10], study_id = 'st' + sha1(salt + StudyInstanceUID)[:10], "
    "series_id = 's' + sha1(salt + SeriesInstanceUID)[:12]; DICOM identifiers are not stored",
)


def default_config() -> PrepareConfig:
    """3D volumes with metadata captions (``dims=2`` for MR-CLIP-style slices)."""
    from radlens.prepare.pipeline import PrepareConfig

    return PrepareConfig(dims=3)


def pseudonym(prefix: str, value: str, salt: str, length: int) -> str:
    """A stable pseudonymous id: ``prefix`` + the first ``length`` hex digits of sha1(salt + value)."""
    return prefix + hashlib.sha1(f"{salt}{value}".encode()).hexdigest()[:length]


def _common_folder(root: Path, paths: list[Path]) -> str:
    rel = [PurePosixPath(p.relative_to(root).as_posix()) for p in paths]
    if len(rel) == 1:
        return rel[0].as_posix()
    parts = [p.parent.parts for p in rel]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common) or "."


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per SeriesInstanceUID under ``root``; non-DICOM and unreadable files are failures."""
    import pydicom

    from radlens.io.dicom import find_series

    series, skipped = find_series(root)
    failures = [Failure(Path(p).relative_to(root).as_posix(), "discover", reason) for p, reason in skipped]
    items: list[SeriesItem] = []
    salt = cfg.pseudonym_salt
    for uid, paths in sorted(series.items(), key=lambda kv: str(kv[1][0])):
        header = pydicom.dcmread(paths[0], stop_before_pixels=True, specific_tags=["PatientID", "StudyInstanceUID", "Modality"])
        patient = pseudonym("p", str(header.get("PatientID", "") or ""), salt, 10)
        study_uid = str(header.get("StudyInstanceUID", "") or uid)
        items.append(
            SeriesItem(
                series_id=pseudonym("s", uid, salt, 12),
                patient_id=patient,
                study_id=pseudonym("st", study_uid, salt, 10),
                source_path=_common_folder(root, paths),
                inputs=tuple(str(p) for p in sorted(paths)),
                modality=str(header.get("Modality", "") or "") or None,
            )
        )
    return Discovery(items, failures)


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """The series' volume (rescale applied; CT in HU when the tags give a rescale)."""
    from radlens.io.dicom import read_dicom_series

    try:
        return read_dicom_series([Path(p) for p in item.inputs])
    except InputError as err:
        raise InputError(item.source_path, err.reason) from None
