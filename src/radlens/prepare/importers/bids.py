"""BIDS-like MRI (NIfTI + dcm2niix JSON sidecars), the MR-CLIP input: slices + metadata captions.

Every ``*.nii``/``*.nii.gz`` under the root is one series; its sidecar is the ``.json`` of the
same stem. Ids come from the BIDS entities in the path: patient ``sub-<label>``, study
``sub-<label>_ses-<label>`` (``ses-1`` when the layout has no sessions), series = file stem.
A file without a ``sub-`` entity is skipped: a patient id is needed for patient-level splits.
Label maps (``*_mask``, ``*_dseg``, ``*_probseg``, ``*_label`` suffixes) are not series. A label map
beside an image, ``<stem>[_<key>-<value>...]_dseg.nii.gz`` or ``<stem>[_...]_mask.nii.gz``, is its
mask (``masks/`` of the prepared dataset): a ``_dseg`` is a label map named by the look-up table
``<dseg stem>.tsv`` (BIDS ``index``/``name`` columns) or ``<dseg stem>.json`` (id -> name), else by
a ``dseg.tsv``/``dseg.json`` in a folder above it up to the root, else ids as found; a ``_mask`` is
binary, its one label named by its ``label-`` or ``desc-`` entity (``_desc-lesion_mask``: "lesion").
A ``_dseg`` wins over ``_mask`` files; among several masks the lesion one is taken; other choices
are refused (the image is listed in failures.csv), as is a label table that disagrees with an
earlier one (one label scheme per dataset).
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
_LABEL_MAP = re.compile(r"_(mask|dseg|probseg|label|labels)$")
# What may follow an image's stem in the name of its label map: entities, then the suffix.
_BESIDE = re.compile(r"^(?P<entities>(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*)_(?P<suffix>mask|dseg)$")
# BIDS suffixes written differently in the contrast column (the class names radlens uses).
_CONTRAST_NAMES = {"T2starw": "T2*w"}


def default_config() -> PrepareConfig:
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


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per NIfTI file under ``root`` (sorted), with BIDS ids."""
    from radlens.io.sidecar import sidecar_path
    from radlens.prepare.masks import SchemeMerger

    if not root.is_dir():
        raise InputError(root, "a BIDS input must be a folder")
    items: list[SeriesItem] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    files = sorted(p for p in root.rglob("*") if p.is_file() and nifti_stem(p) is not None)
    label_maps = _owners(files)
    merger = SchemeMerger()
    for path in files:
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
        try:
            mask, table, scheme, binary = _label_map(path, stem or "", label_maps.get((path.parent, stem or ""), []), root)
        except InputError as err:  # the image's own problem, or its label table's (named)
            where = "" if not err.path or Path(err.path) == path else f"{Path(err.path).name}: "
            failures.append(Failure(rel, "discover", where + err.reason))
            continue
        if scheme is not None:
            source = (table or mask).relative_to(root).as_posix()  # type: ignore[union-attr]
            clash = merger.add(scheme, source)
            if clash is not None:
                failures.append(Failure(rel, "discover", f"{source}: {clash}"))
                continue
        inputs = (str(path), *(str(p) for p in (sidecar, mask, table) if p is not None and p.is_file()))
        items.append(
            SeriesItem(
                series_id=stem,
                patient_id=patient,
                study_id=f"{patient}_{ses.group(1) if ses else 'ses-1'}",
                source_path=rel,
                inputs=inputs,
                modality="MR",
                mask=str(mask) if mask is not None else None,
                mask_labels=scheme,
                mask_binary=binary,
                fields={"contrast": bids_contrast(stem or "")},
            )
        )
    return Discovery(items, failures)


def _entity(entities: str, key: str) -> str | None:
    match = re.search(rf"_{key}-([A-Za-z0-9]+)", entities)
    return match.group(1) if match else None


def _json_table(path: Path) -> dict[int, str] | None:
    """A ``.json`` beside a dseg as a label table, or None when it is a plain sidecar (no labels)."""
    import json

    from radlens.prepare.masks import parse_label_table

    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read as JSON: {err}") from None
    if isinstance(obj, dict) and ("labels" in obj or (obj and all(str(k).isdigit() for k in obj))):
        return parse_label_table(obj, path)
    return None


def _dseg_table(dseg: Path, root: Path) -> tuple[Path | None, dict[int, str] | None]:
    """The look-up table naming a dseg's ids: same stem ``.tsv``/``.json``, else ``dseg.tsv``/``.json`` above."""
    from radlens.prepare.masks import read_label_table

    stem = nifti_stem(dseg) or ""
    folders = [dseg.parent, *[p for p in dseg.parent.parents if p == root or root in p.parents]]
    candidates = [dseg.with_name(f"{stem}.tsv"), dseg.with_name(f"{stem}.json")]
    candidates += [f / name for f in folders for name in ("dseg.tsv", "dseg.json")]
    for path in candidates:
        if not path.is_file():
            continue
        table = read_label_table(path) if path.suffix == ".tsv" else _json_table(path)
        if table is not None:
            return path, table
    return None, None


def _owners(files: list[Path]) -> dict[tuple[Path, str], list[Path]]:
    """The label maps beside each image: a map belongs to the image with the longest stem it extends."""
    images: dict[Path, list[str]] = {}
    for path in files:
        if not _LABEL_MAP.search(nifti_stem(path) or ""):
            images.setdefault(path.parent, []).append(nifti_stem(path) or "")
    owners: dict[tuple[Path, str], list[Path]] = {}
    for path in files:
        name = nifti_stem(path) or ""
        if not _LABEL_MAP.search(name):
            continue
        stems = [s for s in images.get(path.parent, []) if name.startswith(s + "_") and _BESIDE.match(name[len(s):])]
        if stems:
            owner = max(stems, key=len)
            owners.setdefault((path.parent, owner), []).append(path)
    return owners


def _label_map(
    image: Path, stem: str, beside: list[Path], root: Path
) -> tuple[Path | None, Path | None, dict[int, str] | None, bool]:
    """The image's mask: (label map, label table file, scheme or None for ids as found, binary)."""
    from radlens.prepare.masks import binary_scheme

    found: dict[str, list[tuple[Path, str]]] = {"dseg": [], "mask": []}
    for path in beside:
        rest = (nifti_stem(path) or "")[len(stem):] if (nifti_stem(path) or "").startswith(stem + "_") else ""
        match = _BESIDE.match(rest)
        if match:
            found[match["suffix"]].append((path, match["entities"]))
    if len(found["dseg"]) > 1:
        names = ", ".join(p.name for p, _ in found["dseg"])
        raise InputError(image, f"several label maps (_dseg) beside the image: {names}; keep one")
    if found["dseg"]:
        dseg = found["dseg"][0][0]
        table, scheme = _dseg_table(dseg, root)
        return dseg, table, scheme, False
    masks = found["mask"]
    if len(masks) > 1:
        lesion = [m for m in masks if "lesion" in (_entity(m[1], "label"), _entity(m[1], "desc"))]
        if len(lesion) != 1:
            names = ", ".join(p.name for p, _ in masks)
            raise InputError(image, f"several masks beside the image and none is the lesion mask: {names}; keep one")
        masks = lesion
    if not masks:
        return None, None, None, False
    path, entities = masks[0]
    name = _entity(entities, "label") or _entity(entities, "desc") or "mask"
    return path, None, binary_scheme(name), True


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
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
