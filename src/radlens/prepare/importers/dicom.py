"""A folder tree of DICOM series: 3D volumes (or 2D slices) with PHI-filtered metadata from the tags.

Series are grouped by SeriesInstanceUID wherever their files lie (a folder holding several
series gives several items). Ids are keyed pseudonyms, never DICOM identifiers: patient
``"p" + HMAC-SHA256(key, PatientID)[:16]``, study ``"st" + HMAC(key, StudyInstanceUID)[:16]``,
series ``"s" + HMAC(key, SeriesInstanceUID)[:16]`` (hex digits), with the key of
:func:`radlens.io.phi.load_phi_key` (``PrepareConfig.phi_key_file``). The same key gives the
same ids on every run; without the key they cannot be traced back. The DICOM PatientID/PatientName
never reach the tables, the card, the captions or the console, and source paths are recorded
without patient folders and identifying names (:mod:`radlens.prepare.identity`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from radlens.errors import InputError
from radlens.io.phi import IDENTITY_TAGS, PhiKey, identity_tokens
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

PROTOCOL_LABELS = True
NOTES = (
    "ids are keyed pseudonyms: patient_id = 'p' + HMAC-SHA256(key, PatientID)[:16], study_id = 'st' + "
    "HMAC-SHA256(key, StudyInstanceUID)[:16], series_id = 's' + HMAC-SHA256(key, SeriesInstanceUID)[:16]; the key is "
    "kept outside the outputs (pseudonym_key_fingerprint tells keys apart); DICOM identifiers are not stored",
    "source_path: the patient's own folder is replaced by its pseudonym and identifying values in names by '*'",
)
# Header tags read at discovery: ids, and the values whose appearance in a path is identifying.
_DISCOVERY_TAGS = ["PatientID", "StudyInstanceUID", "Modality", *IDENTITY_TAGS]


def default_config() -> PrepareConfig:
    """3D volumes with metadata captions (``dims=2`` for MR-CLIP-style slices)."""
    from radlens.prepare.pipeline import PrepareConfig

    return PrepareConfig(dims=3)


def pseudonym(prefix: str, value: str, key: PhiKey) -> str:
    """A stable pseudonymous id: ``prefix`` + 16 hex digits of HMAC-SHA256(key, value)."""
    return key.pseudonym(prefix, value)


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
    from radlens.io.phi import load_phi_key
    from radlens.prepare.identity import PatientTree

    key = load_phi_key(cfg.phi_key_file)
    series, skipped = find_series(root)
    tree = PatientTree()
    items: list[SeriesItem] = []
    for uid, paths in sorted(series.items(), key=lambda kv: str(kv[1][0])):
        header = pydicom.dcmread(paths[0], stop_before_pixels=True, specific_tags=_DISCOVERY_TAGS)
        patient = pseudonym("p", str(header.get("PatientID", "") or ""), key)
        study_uid = str(header.get("StudyInstanceUID", "") or uid)
        folder = _common_folder(root, paths)
        tree.add(folder, patient, identity_tokens(header))
        items.append(
            SeriesItem(
                series_id=pseudonym("s", uid, key),
                patient_id=patient,
                study_id=pseudonym("st", study_uid, key),
                source_path=folder,
                inputs=tuple(str(p) for p in sorted(paths)),
                modality=str(header.get("Modality", "") or "") or None,
            )
        )
    items = [dataclasses.replace(item, source_path=tree.series_path(item.source_path, item.patient_id)) for item in items]
    failures = [Failure(tree.failure_path(Path(p).relative_to(root).as_posix()), "discover", reason) for p, reason in skipped]
    return Discovery(items, failures, phi_key_fingerprint=key.fingerprint)


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """The series' volume (rescale applied; CT in HU when the tags give a rescale)."""
    from radlens.io.dicom import read_dicom_series

    try:
        return read_dicom_series([Path(p) for p in item.inputs])
    except InputError as err:
        raise InputError(item.source_path, err.reason) from None
