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

HU handling follows ``PrepareConfig.already_hu`` and is never guessed: ``"yes"`` reads the files
as they are, ``"no"`` applies each row's RescaleSlope/Intercept, ``"auto-column"`` reads a
per-row flag (:data:`HU_FLAG_COLUMNS`) from the metadata CSV and refuses to start without one.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.volume import Volume
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
_NAME = re.compile(r"^(?P<split>[A-Za-z]+)_(?P<patient>[0-9]+)_(?P<scan>[A-Za-z0-9]+)_(?P<recon>[0-9]+)$")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


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


def _read_csvs(root: Path, word: str) -> pd.DataFrame | None:
    import pandas as pd

    paths = sorted(p for p in root.rglob(f"*{word}*.csv") if p.is_file())
    if not paths:
        return None
    frames = []
    for p in paths:
        df = pd.read_csv(p)
        if "VolumeName" not in df.columns:
            raise InputError(p, "missing column ['VolumeName']")
        frames.append(df)
    return pd.concat(frames, ignore_index=True).drop_duplicates("VolumeName", keep="first").set_index("VolumeName")


def _volume_name(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _flag(value: Any, column: str, name: str) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(name, f"{column} is not a yes/no flag: {value!r}")


def _rescale(name: str, cfg: PrepareConfig, meta: pd.DataFrame | None, flag: str | None) -> tuple[float, float] | None:
    """The (slope, intercept) to apply to one volume, or None when it already holds HU."""
    if cfg.already_hu == "yes":
        return None
    if meta is None or name not in meta.index:
        raise InputError(name, "no row in the metadata CSV (RescaleSlope/RescaleIntercept needed)")
    row = meta.loc[name]
    if flag is not None and _flag(row[flag], flag, name):
        return None
    try:
        slope, intercept = float(row["RescaleSlope"]), float(row["RescaleIntercept"])
    except (KeyError, TypeError, ValueError):
        raise InputError(name, "RescaleSlope/RescaleIntercept missing or not numbers in the metadata CSV") from None
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise InputError(name, "RescaleSlope/RescaleIntercept missing in the metadata CSV")
    return slope, intercept


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per volume listed in the reports CSVs."""
    from radlens.prepare.masks import SchemeMerger, read_label_table
    from radlens.prepare.reports import from_ctrate_row, report_text

    if not root.is_dir():
        raise InputError(root, "a CT-RATE input must be a folder")
    reports = _read_csvs(root, "reports")
    if reports is None:
        raise InputError(root, "no reports CSV (*reports*.csv with a VolumeName column)")
    labels = _read_csvs(root, "labels")
    meta = _read_csvs(root, "metadata")
    flag = None
    if cfg.already_hu == "auto-column":
        found = [c for c in HU_FLAG_COLUMNS if meta is not None and c in meta.columns]
        if not found:
            raise ConfigError(
                f"already_hu='auto-column' needs a per-volume flag column ({', '.join(HU_FLAG_COLUMNS)}) in the "
                "metadata CSV; none found. Set already_hu to 'yes' (files hold HU) or 'no' (apply RescaleSlope/Intercept)."
            )
        flag = found[0]
    files = {_volume_name(p.name): p for p in root.rglob("*.nii*") if p.is_file() and p.name.endswith((".nii", ".nii.gz"))}
    masks = {name.removesuffix("_mask"): p for name, p in files.items() if name.endswith("_mask")}
    tables: dict[Path, Path | None] = {}
    merger = SchemeMerger()
    items: list[SeriesItem] = []
    failures: list[Failure] = []
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
            rescale = _rescale(str(volume_name), cfg, meta, flag)
            sections = from_ctrate_row({"VolumeName": volume_name, **row.to_dict()})
        except InputError as err:
            failures.append(Failure(str(volume_name), "discover", err.reason))
            continue
        fields: dict[str, Any] = {**sections.to_columns(), "source_split": match["split"]}
        if labels is not None and volume_name in labels.index:
            fields.update({f: int(labels.loc[volume_name, f]) for f in FINDINGS if f in labels.columns})
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
                source_path=files[name].relative_to(root).as_posix(),
                inputs=(str(files[name]), *(str(p) for p in (mask, table) if p is not None)),
                modality="CT",
                text=report_text(sections),
                rescale=rescale,
                mask=str(mask) if mask is not None else None,
                mask_labels=scheme,
                fields=fields,
            )
        )
    return Discovery(items, failures, findings=FINDINGS if labels is not None else ())


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
    """The volume in HU (rescaled when the item says so), marked CT."""
    from radlens.io.reader import read_volume

    volume = read_volume(item.inputs[0], rescale=item.rescale)
    volume.metadata = volume.metadata.replace(Modality="CT")
    # HU by the configured rule (already_hu / the metadata CSV), not by what the file suggests.
    volume.hu = True
    return volume
