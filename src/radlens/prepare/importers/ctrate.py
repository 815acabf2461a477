"""CT-RATE (chest CT + reports, CT-CLIP's dataset): 3D volumes, report text, 18 finding labels.

Layout (``/work/shared/FORMATS.md``): volumes ``{split}_{patient}_{scan}_{recon}.nii.gz`` anywhere
under the root, and the CSVs next to them: ``*reports*.csv`` (``VolumeName`` + report sections),
``*labels*.csv`` (``VolumeName`` + 18 findings), ``*metadata*.csv`` (``VolumeName``,
``RescaleSlope``, ``RescaleIntercept``, ...). The reports CSVs list the series; a listed volume
without a file is a failure. Patient ``{split}_{patient}``, scan ``{split}_{patient}_{scan}``,
series = the volume name. Text = Findings; every section is kept as a ``report_*`` column.

Masks (the radlens CT phantom writes them; CT-RATE itself has none): a label map
``{name}_mask.nii.gz`` anywhere under the root (the phantom mirrors the volume folders under
``masks/``) is the mask of volume ``name``; its ids are named by the nearest ``labels.json``
in its folder or a folder above it (``{"labels": {"0": "background", "1": ...}}``), else kept
as found. Tables that disagree are refused (one label scheme per dataset).

CT-RATE's public repository holds two copies of every volume: ``dataset/train``/``dataset/valid``
(raw: the metadata CSV's RescaleSlope/Intercept must be applied) and ``dataset/train_fixed``/
``dataset/valid_fixed`` (already HU, geometry fixed: nothing may be applied); the metadata CSV
does not say which tree a file is in. HU handling (``PrepareConfig.already_hu``) is decided per
volume and never guessed:

- ``auto`` (default): a file under a ``{train,valid,validation,test}_fixed`` folder holds HU;
  any other file needs the metadata row's RescaleSlope/Intercept, unless the metadata CSV has a
  per-volume flag column (:data:`HU_FLAG_COLUMNS`, e.g. ``StoredAsHU``) saying it holds HU.
  A ``*_fixed`` file whose flag says raw is refused (the evidence disagrees).
- ``auto-column``: the flag column decides and must exist (ConfigError before any work);
  a ``*_fixed`` file flagged raw is refused as above.
- ``yes`` / ``no``: every volume holds HU / needs slope and intercept (the user's override).

In every mode the data must agree (:func:`radlens.prepare.intensity.check_hu`, on every volume
as it is read): after the conversion air must sit near -1000 HU and the body in the soft-tissue
range, else the volume is a failure row saying what was decided and what the data shows.
When a volume name has a file in both trees, the fixed copy is taken (already HU, geometry
fixed; with ``already_hu=no`` the raw copy, the one that rule describes); two files of one name
in the same tree are refused. The series table says per volume what was decided and why:
``hu_stored_as`` (``HU``/``raw``), ``hu_slope``/``hu_intercept`` (applied, empty for HU),
``hu_reason``, ``hu_copy`` (which copy of a doubled name and why; empty for a single file) and
the measured ``hu_air_fraction``/``hu_body_fraction``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import TABLE_COLUMNS, Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.volume import Volume
    from radlens.prepare.importers.tables import KeyedTable
    from radlens.prepare.pipeline import PrepareConfig

FINDINGS = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)
HU_FLAG_COLUMNS = ("StoredAsHU", "stored_as_hu", "AlreadyHU", "already_hu")
# CT-RATE's already-HU trees: dataset/train_fixed, dataset/valid_fixed.
_FIXED_TREE = re.compile(r"^(train|valid|validation|test)_fixed$")
_NAME = re.compile(r"^(?P<split>[A-Za-z]+)_(?P<patient>[0-9]+)_(?P<scan>[A-Za-z0-9]+)_(?P<recon>[0-9]+)$")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class HuDecision:
    """How one volume becomes HU: the file taken, the (slope, intercept) to apply (None: it holds HU)
    and the series-table columns that say what was decided and why."""

    path: Path
    rescale: tuple[float, float] | None
    columns: dict[str, Any]


def default_config() -> PrepareConfig:
    """CT-CLIP's model input: 0.75x0.75x1.5 mm, HU [-1000, 1000] / 1000, 480x480x240 padded with -1.

    CT-RATE's valid part is the test set (``source_valid_split``); 10% of the train part's
    patients become the validation set.
    """
    from radlens.prepare.intensity import IntensityConfig
    from radlens.prepare.pipeline import PrepareConfig
    from radlens.prepare.spatial import SpatialConfig
    from radlens.prepare.splits import SplitConfig

    return PrepareConfig(
        dims=3,
        # Padding happens in HU, before the window: -1000 HU becomes CT-CLIP's pad value -1.
        spatial=SpatialConfig(target_spacing=(0.75, 0.75, 1.5), shape=(480, 480, 240), pad_value=-1000.0),
        intensity=IntensityConfig(ct_window=(-1000.0, 1000.0), ct_output="hu/1000"),
        split=SplitConfig(ratios=(0.9, 0.1, 0.0)),
    )


def _read_csvs(root: Path, word: str, required: tuple[str, ...] = ()) -> KeyedTable | None:
    """The ``*{word}*.csv`` tables by VolumeName (:func:`radlens.prepare.importers.tables.read_keyed`):
    an unreadable table or one without a ``required`` column is refused before any work."""
    from radlens.prepare.importers.tables import read_keyed

    paths = sorted(p for p in root.rglob(f"*{word}*.csv") if p.is_file())
    if not paths:
        return None
    return read_keyed(paths, "VolumeName", required)


def _row_labels(volume_name: str, labels: KeyedTable | None) -> dict[str, int]:
    """The 18 finding labels of a volume; InputError (a failure row) when its labels row is missing,
    listed twice with different values, or holds a value that is not 0/1."""
    from radlens.prepare.importers.tables import binary_labels

    if labels is None:
        return {}
    if volume_name in labels.conflicts:
        raise InputError(volume_name, f"labels CSV: {labels.conflicts[volume_name]}")
    if volume_name not in labels.frame.index:
        raise InputError(volume_name, "no row in the labels CSV (every volume needs its 18 finding labels when a labels CSV is given)")
    return binary_labels(labels.frame.loc[volume_name], FINDINGS, f"labels CSV {labels.source(volume_name)}")


def _unlisted(files: dict[str, list[Path]], listed: set[str], root: Path) -> list[Failure]:
    """A failure row per volume file that no row of the reports CSVs lists (it has no text)."""
    return [Failure(p.relative_to(root).as_posix(), "discover", "no row in the reports CSV: not prepared (no report text)")
            for name, paths in files.items() if name not in listed for p in paths]


def _volume_name(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _flag(value: Any, column: str, name: str) -> bool | None:
    """A per-volume yes/no flag (1/0, true/false, yes/no; 1.0/0.0 where pandas made the column float);
    None when the cell is empty (a metadata CSV without the column for this split)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip():
        return None
    text = str(value).strip().lower()
    if isinstance(value, (int, float)) and float(value) in (0.0, 1.0):
        return bool(value)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(name, f"{column} is not a yes/no flag: {value!r}")


def _shown(value: Any) -> str:
    """A flag cell as the user wrote it (``1``, not ``1.0`` where pandas made the column float)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def fixed_tree(path: Path) -> str | None:
    """The CT-RATE already-HU tree (``train_fixed``, ``valid_fixed``, ...) ``path`` lies under, or None."""
    return next((part for part in reversed(path.parent.parts) if _FIXED_TREE.match(part)), None)


def _choose_copy(name: str, paths: list[Path], root: Path, rule: str) -> tuple[Path, str]:
    """The file to read for a volume name found ``paths`` times, and why (empty for a single file)."""
    fixed = [p for p in paths if fixed_tree(p)]
    raw = [p for p in paths if not fixed_tree(p)]
    for tree, found in (("fixed", fixed), ("raw", raw)):
        if len(found) > 1:
            listed = ", ".join(p.relative_to(root).as_posix() for p in sorted(found))
            raise InputError(name, f"{len(found)} files of this volume in the {tree} tree ({listed}); remove all but one")
    if not (fixed and raw):
        return paths[0], ""
    f, r = fixed[0].relative_to(root).as_posix(), raw[0].relative_to(root).as_posix()
    if rule == "no":
        return raw[0], f"raw copy {r} taken over fixed copy {f}: already_hu=no describes raw files"
    return fixed[0], f"fixed copy {f} taken over raw copy {r}: already HU and geometry fixed (CT-RATE's corrected release)"


def _metadata_rescale(name: str, row: Any) -> tuple[float, float]:
    """The metadata row's (RescaleSlope, RescaleIntercept), or InputError saying what is missing."""
    if row is None:
        raise InputError(name, "no row in the metadata CSV (RescaleSlope/RescaleIntercept needed)")
    try:
        slope, intercept = float(row["RescaleSlope"]), float(row["RescaleIntercept"])
    except (KeyError, TypeError, ValueError):
        raise InputError(name, "RescaleSlope/RescaleIntercept missing or not numbers in the metadata CSV") from None
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0.0:
        raise InputError(name, f"RescaleSlope/RescaleIntercept missing or unusable in the metadata CSV ({slope}, {intercept})")
    return slope, intercept


def decide_hu(name: str, paths: list[Path], root: Path, rule: str, meta: pd.DataFrame | None, flag: str | None) -> HuDecision:
    """Which file of volume ``name`` to read and how it becomes HU (see the module docstring).

    InputError (the volume becomes a failure row) when the metadata needed is missing or when the
    tree and the flag column disagree; the data itself is checked when the file is read.
    """
    path, copy = _choose_copy(name, paths, root, rule)
    fixed = fixed_tree(path)
    folder = path.relative_to(root).parent.as_posix()
    where = f"{fixed}/" if fixed else ("the input folder" if folder == "." else f"{folder}/")
    row = meta.loc[name] if meta is not None and name in meta.index else None
    flagged = None if flag is None or row is None else _flag(row[flag], flag, name)
    if rule == "auto-column" and flagged is None:
        raise InputError(name, f"no {flag} value in the metadata CSV (already_hu=auto-column needs one per volume)")
    if rule in ("auto", "auto-column") and fixed and flagged is False:
        raise InputError(name, f"the evidence disagrees: the file is under {where} (CT-RATE's fixed tree holds HU) "
                               f"but the metadata CSV says {flag}={_shown(row[flag])} (raw); refusing rather than guessing")
    if rule == "yes":
        holds_hu, reason = True, "already_hu=yes (given)"
    elif rule == "no":
        holds_hu, reason = False, "already_hu=no (given)"
    elif flagged is not None:
        holds_hu, reason = flagged, f"metadata {flag}={_shown(row[flag])}" + (f", file under {where}" if fixed else "")
    elif fixed:
        holds_hu, reason = True, f"file under {where}: CT-RATE's *_fixed trees hold HU"
    else:
        holds_hu, reason = False, f"file under {where}, not a *_fixed tree: raw values"
    rescale = None if holds_hu else _metadata_rescale(name, row)
    if rescale is not None:
        reason += f"; metadata RescaleSlope {rescale[0]:g}, RescaleIntercept {rescale[1]:g} applied"
    columns = {
        "hu_stored_as": "HU" if holds_hu else "raw",
        "hu_slope": rescale[0] if rescale else None,
        "hu_intercept": rescale[1] if rescale else None,
        "hu_reason": reason,
        "hu_copy": copy,
    }
    return HuDecision(path, rescale, columns)


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per volume listed in the reports CSVs."""
    from radlens.prepare.masks import SchemeMerger, read_label_table
    from radlens.prepare.reports import CTRATE_COLUMNS, ctrate_training_text, from_ctrate_row

    if not root.is_dir():
        raise InputError(root, "a CT-RATE input must be a folder")
    report_table = _read_csvs(root, "reports", tuple(CTRATE_COLUMNS))
    if report_table is None:
        raise InputError(root, "no reports CSV (*reports*.csv with a VolumeName column)")
    label_table = _read_csvs(root, "labels", FINDINGS)
    meta_table = _read_csvs(root, "metadata")
    reports = report_table.frame
    meta = meta_table.frame if meta_table is not None else None
    notes = [n for t in (report_table, label_table, meta_table) if t is not None for n in t.notes]
    if meta is not None:
        meta.index = [_volume_name(str(v)) for v in meta.index]
        meta = meta[~meta.index.duplicated()]
    flag = next((c for c in HU_FLAG_COLUMNS if meta is not None and c in meta.columns), None)
    if cfg.already_hu == "auto-column" and flag is None:
        raise ConfigError(
            f"already_hu='auto-column' needs a per-volume flag column ({', '.join(HU_FLAG_COLUMNS)}) in the "
            "metadata CSV; none found. Use already_hu='auto' (decide per volume from the *_fixed trees and the data), "
            "'yes' (files hold HU) or 'no' (apply RescaleSlope/Intercept)."
        )
    files: dict[str, list[Path]] = {}
    masks: dict[str, Path] = {}
    for p in sorted(root.rglob("*.nii*")):
        if p.is_file() and p.name.endswith((".nii", ".nii.gz")):
            name = _volume_name(p.name)
            if name.endswith("_mask"):
                masks[name.removesuffix("_mask")] = p
            else:
                files.setdefault(name, []).append(p)
    tables: dict[Path, Path | None] = {}
    merger = SchemeMerger()
    items: list[SeriesItem] = []
    failures = [Failure(key, "discover", f"reports CSV: {why}") for key, why in report_table.conflicts.items()]
    for volume_name, row in reports.iterrows():
        name = _volume_name(str(volume_name))
        match = _NAME.match(name)
        if match is None:
            failures.append(Failure(str(volume_name), "discover", "VolumeName is not {split}_{patient}_{scan}_{recon}"))
            continue
        if name not in files:
            failures.append(Failure(str(volume_name), "discover", "listed in the reports CSV but no such file"))
            continue
        try:
            if meta_table is not None and str(volume_name) in meta_table.conflicts:
                raise InputError(volume_name, f"metadata CSV: {meta_table.conflicts[str(volume_name)]}")
            hu = decide_hu(name, files[name], root, cfg.already_hu, meta, flag)
            sections = from_ctrate_row({"VolumeName": volume_name, **row.to_dict()})
            text = ctrate_training_text(sections, f"reports CSV {report_table.source(str(volume_name))}")
            finding_labels = _row_labels(str(volume_name), label_table)
        except InputError as err:
            failures.append(Failure(str(volume_name), "discover", err.reason))
            continue
        fields: dict[str, Any] = {**sections.to_columns(), "source_split": match["split"], **hu.columns, **finding_labels}
        patient = f"{match['split']}_{match['patient']}"
        scan = f"{patient}_{match['scan']}"
        mask, table, scheme = masks.get(name), None, None
        if mask is not None:
            table = _labels_json(mask.parent, root, tables)
            try:
                scheme = read_label_table(table) if table is not None else None
            except InputError as err:
                failures.append(Failure(str(volume_name), "discover", f"{Path(err.path).name}: {err.reason}"))
                continue
            if scheme is not None:
                clash = merger.add(scheme, table.relative_to(root).as_posix())  # type: ignore[union-attr]
                if clash is not None:
                    failures.append(Failure(str(volume_name), "discover", f"{table.relative_to(root).as_posix()}: {clash}"))  # type: ignore[union-attr]
                    continue
        items.append(
            SeriesItem(
                series_id=name,
                patient_id=patient,
                study_id=scan,
                scan_id=scan,
                source_path=hu.path.relative_to(root).as_posix(),
                inputs=(str(hu.path), *(str(p) for p in (mask, table) if p is not None)),
                modality="CT",
                text=text,
                rescale=hu.rescale,
                mask=str(mask) if mask is not None else None,
                mask_labels=scheme,
                fields=fields,
            )
        )
    failures += _unlisted(files, {_volume_name(str(v)) for v in [*reports.index, *report_table.conflicts]}, root)
    return Discovery(items, failures, findings=FINDINGS if label_table is not None else (), notes=notes)


def _labels_json(folder: Path, root: Path, cache: dict[Path, Path | None]) -> Path | None:
    """The nearest ``labels.json`` in ``folder`` or a folder above it, up to ``root``."""
    if folder not in cache:
        here = folder / "labels.json"
        if here.is_file():
            cache[folder] = here
        elif folder == root or root not in folder.parents:
            cache[folder] = None
        else:
            cache[folder] = _labels_json(folder.parent, root, cache)
    return cache[folder]


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """The volume in HU (rescaled when the item says so), marked CT, once the data agrees it is HU.

    InputError (a failure row) when air is not near -1000 HU or the body not in the soft-tissue
    range after the decided conversion: the decision and the measurement are both named.
    """
    from radlens.io.reader import read_volume
    from radlens.prepare.intensity import check_hu

    volume = read_volume(item.inputs[0], rescale=item.rescale)
    check = check_hu(volume.array)
    if not check.plausible:
        raise InputError(item.source_path, f"not HU after the decided conversion ({item.fields.get('hu_reason')}): "
                                           f"{check.describe()}; refusing rather than guessing")
    extra = {**volume.metadata.extra, TABLE_COLUMNS: check.columns()}
    volume.metadata = volume.metadata.replace(Modality="CT", extra=extra)
    volume.hu = True
    return volume
