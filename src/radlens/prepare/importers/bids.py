"""BIDS-like MRI (NIfTI + dcm2niix JSON sidecars), the MR-CLIP input: slices + metadata captions.

Every ``*.nii``/``*.nii.gz`` under the root is one series; its sidecar is the ``.json`` of the
same stem. Ids come from the BIDS entities in the path: patient ``sub-<label>``, study
``sub-<label>_ses-<label>`` (``ses-1`` when the layout has no sessions), series = file stem.
A file without a ``sub-`` entity is skipped: a patient id is needed for patient-level splits.
Label maps (``*_mask``, ``*_dseg``, ``*_label`` suffixes) are not series: a
``<stem>_desc-lesion_mask.nii.gz`` beside an image marks which of its slices hold a lesion.
The BIDS suffix names the contrast (``T1w``, ``T2w``, ``PDw``, ``FLAIR``, ``T2starw``, ``STIR``, ...)
and becomes the ``contrast`` column of ``series.parquet`` (``T2starw`` written ``T2*w``; null when
the name ends in a ``key-value`` entity, i.e. has no suffix).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from radlens.errors import InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

PROTOCOL_LABELS = True
_SUB = re.compile(r"(?:^|[_/])(sub-[A-Za-z0-9]+)")
_SES = re.compile(r"(?:^|[_/])(ses-[A-Za-z0-9]+)")
_LABEL_MAP = re.compile(r"_(mask|dseg|label|labels)$")
LESION_MASK = "_desc-lesion_mask.nii.gz"
# BIDS suffixes written differently in the contrast column (the class names radlens uses).
_CONTRAST_NAMES = {"T2starw": "T2*w"}


def default_config() -> "PrepareConfig":
    """MR-CLIP's setting: 2D slices with metadata captions, protocol labels and TE/TR/TI bins."""
    from radlens.prepare.pipeline import PrepareConfig

    return PrepareConfig(dims=2)


def nifti_stem(path: Path) -> str | None:
    """File name without ``.nii``/``.nii.gz``; None for other files."""
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def bids_contrast(stem: str) -> str | None:
    """The contrast a BIDS file name states: its suffix (last ``_`` part), None when that is an entity."""
    suffix = stem.rsplit("_", 1)[-1]
    if "_" not in stem or not suffix or "-" in suffix:
        return None
    return _CONTRAST_NAMES.get(suffix, suffix)


def discover(root: Path, cfg: "PrepareConfig") -> Discovery:
    """One item per NIfTI file under ``root`` (sorted), with BIDS ids."""
    from radlens.io.sidecar import sidecar_path

    if not root.is_dir():
        raise InputError(root, "a BIDS input must be a folder")
    items: list[SeriesItem] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and nifti_stem(p) is not None):
        rel = path.relative_to(root).as_posix()
        stem = nifti_stem(path)
        if _LABEL_MAP.search(stem or ""):
            continue
        sub = _SUB.search(rel)
        if sub is None:
            failures.append(Failure(rel, "discover", "no sub-<label> entity in the path (needed as patient id)"))
            continue
        if stem in seen:
            failures.append(Failure(rel, "discover", f"duplicate series name {stem!r}"))
            continue
        seen.add(stem)
        ses = _SES.search(rel)
        patient = sub.group(1)
        sidecar = sidecar_path(path)
        lesion = path.with_name(f"{stem}{LESION_MASK}")
        mask = str(lesion) if lesion.is_file() else None
        inputs = (str(path), *(str(p) for p in (sidecar, lesion) if p.is_file()))
        items.append(
            SeriesItem(
                series_id=stem,
                patient_id=patient,
                study_id=f"{patient}_{ses.group(1) if ses else 'ses-1'}",
                source_path=rel,
                inputs=inputs,
                modality="MR",
                mask=mask,
                fields={"contrast": bids_contrast(stem or "")},
            )
        )
    return Discovery(items, failures)


def load(item: SeriesItem, cfg: "PrepareConfig") -> "Volume":
    """The NIfTI volume with its sidecar's metadata (read by the reader); no sidecar is an error."""
    from radlens.io.reader import read_volume
    from radlens.io.sidecar import sidecar_path

    path = Path(item.inputs[0])
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise InputError(item.source_path, f"no JSON sidecar (expected {sidecar.name})")
    volume = read_volume(path)
    if not volume.metadata.Modality:
        volume.metadata = volume.metadata.replace(Modality="MR")
    return volume
