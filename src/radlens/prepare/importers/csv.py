"""A CSV table of images and texts (MR-CLIP's ``filepath,text,label``, or any image/report table).

Columns: the image path (``filepath``, ``image`` or ``path``; relative paths are relative to the
CSV's folder) and ``text`` are required; optional ``label`` (integer class/protocol id),
``patient_id``, ``study_id``, ``split`` (kept as given), ``modality``; any other column holding
only 0/1 is a finding label column. Missing required columns are an error before any work.

The CSV's folder is the source: every listed path (image or mask) must lie inside it (no ``..``,
no absolute path elsewhere; see :mod:`radlens.prepare.importers.paths`) and tables record it
relative to that folder. The series id is that relative path without its suffix, ``/`` -> ``_``;
two rows giving one id (the same file twice, ``a/b.png`` and ``a_b.png``, ``x.png`` and
``x.jpg``) are refused, naming both rows. These table problems stop the command before any work,
rows counted from 1 below the header.

Images are 2D files (PNG/JPEG/BMP/TIFF: 8/16-bit values are scaled by their white level to
[0, 1]; ``.npy`` slices as stored; one slice per row)
or volumes (anything :func:`radlens.io.reader.read_volume` reads). A row's patient is its
``patient_id`` (radlens' MR-CLIP export writes one); without it, ``PrepareConfig.patient_from``
decides: by default the image's folder (or the file stem for images directly next to the CSV),
``parent`` for the folder above, or a regular expression on the relative path.

Masks: an optional ``mask`` (or ``mask_path``) column gives each row's label map, a path like the
image's (empty: no mask): NIfTI for volumes, PNG/``.npy`` holding label ids for 2D images, in the
image's voxel grid. Its ids are named by a ``labels.json`` next to the CSV (``{"0": "background",
"1": "lesion"}``, or nnU-Net's ``{"background": 0, "lesion": 1}``), else kept as found.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

IMAGE_COLUMNS = ("filepath", "image", "path")
OPTIONAL = ("label", "patient_id", "study_id", "split", "modality")
MASK_COLUMNS = ("mask", "mask_path")
LABELS_FILE = "labels.json"
# Pillow modes of integer images -> the value that means "white".
_FULL_SCALE = {"1": 1.0, "L": 255.0, "LA": 255.0, "P": 255.0, "RGB": 255.0, "RGBA": 255.0, "I;16": 65535.0,
               "I;16B": 65535.0, "I;16L": 65535.0}


def default_config() -> PrepareConfig:
    """2D images as they are (one slice each), splits from a ``split`` column where given."""
    from radlens.prepare.pipeline import PrepareConfig
    from radlens.prepare.splits import SplitConfig

    return PrepareConfig(dims=2, split=SplitConfig(keep_existing=True, existing_col="split_given"))


def _finding_columns(df: Any, used: set[str]) -> tuple[str, ...]:
    out = []
    for column in df.columns:
        if column in used:
            continue
        values = set(df[column].dropna().unique().tolist())
        if values and values <= {0, 1}:
            out.append(column)
    return tuple(out)


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per CSV row; the header, paths, ids and patients are checked before anything else."""
    import pandas as pd

    from radlens.prepare.importers.paths import listed_path, patient_of, patient_rule, stem
    from radlens.prepare.importers.tables import binary_labels, find_table, integer_value, read_table

    table = find_table(root)
    df = read_table(table)
    image_col = next((c for c in IMAGE_COLUMNS if c in df.columns), None)
    missing = ([] if image_col else [" or ".join(IMAGE_COLUMNS)]) + (["text"] if "text" not in df.columns else [])
    if missing:
        raise InputError(table, f"missing column(s) {missing}; has {list(df.columns)}")
    findings = _finding_columns(df, {image_col, "text", *OPTIONAL, *MASK_COLUMNS})
    base = table.parent
    mask_col = next((c for c in MASK_COLUMNS if c in df.columns), None)
    labels_file = base / LABELS_FILE
    scheme = None
    if mask_col is not None and labels_file.is_file():
        from radlens.prepare.masks import read_label_table

        scheme = read_label_table(labels_file)
    rule = patient_rule(cfg.patient_from)
    items: list[SeriesItem] = []
    failures: list[Failure] = []
    rows_of: dict[str, int] = {}
    for n, (_, row) in enumerate(df.iterrows(), start=1):
        where = f"row {n}"
        path, rel = listed_path(base, row[image_col], table, f"{where} {image_col}")
        series_id = stem(rel).replace("/", "_")
        if series_id in rows_of:
            raise InputError(table, f"rows {rows_of[series_id]} and {n} give the same series id {series_id!r} "
                                    f"(row {n}: {rel}); list each image once, under names that differ after "
                                    "dropping the suffix and replacing '/' with '_'")
        rows_of[series_id] = n
        mask = None
        if mask_col is not None and pd.notna(row[mask_col]) and str(row[mask_col]).strip():
            mask = listed_path(base, row[mask_col], table, f"{where} {mask_col}")[0]
        if "patient_id" in df.columns and pd.notna(row["patient_id"]) and str(row["patient_id"]).strip():
            patient = str(row["patient_id"]).strip().replace("/", "_")
        else:
            patient = patient_of(rule, cfg.patient_from, rel, table, where)
        if not path.exists():
            failures.append(Failure(rel, "discover", "no such file"))
            continue
        if mask is not None and not mask.is_file():
            failures.append(Failure(rel, "discover", f"mask {row[mask_col]}: no such file"))
            continue
        label = integer_value(row["label"]) if "label" in df.columns and pd.notna(row["label"]) else None
        if label is None and "label" in df.columns and pd.notna(row["label"]):
            failures.append(Failure(rel, "discover", f"{table.name} row {n}: label {row['label']!r} is not an integer class id"))
            continue
        try:
            fields: dict[str, Any] = binary_labels(row, findings, f"{table.name} row {n}")
        except InputError as err:
            failures.append(Failure(rel, "discover", str(err)))
            continue
        if label is not None:
            fields["label"] = label
        if "split" in df.columns and pd.notna(row["split"]):
            fields["split_given"] = str(row["split"])
        items.append(
            SeriesItem(
                series_id=series_id,
                patient_id=patient,
                study_id=str(row["study_id"]) if "study_id" in df.columns and pd.notna(row["study_id"]) else patient,
                source_path=rel,
                inputs=(str(path), *((str(mask), *((str(labels_file),) if scheme else ())) if mask else ())),
                mask=str(mask) if mask is not None else None,
                mask_labels=scheme if mask is not None else None,
                modality=str(row["modality"]) if "modality" in df.columns and pd.notna(row["modality"]) else None,
                text="" if pd.isna(row["text"]) else str(row["text"]),
                fields=fields,
            )
        )
    return Discovery(items, failures, findings)


def _full_scale(path: Path) -> float:
    """The stored value of white for an integer image (8-bit 255, 16-bit 65535); 1 for float data."""
    if path.suffix.lower() == ".npy":
        return 1.0
    from PIL import Image

    with Image.open(path) as img:  # reads the header only
        return _FULL_SCALE.get(img.mode, 1.0)


def _slice_volume(image: np.ndarray, path: Path, allow_empty: bool = False) -> Volume:
    """A 2D image ``(H, W)`` as a one-slice volume with an identity affine."""
    from radlens.io.build import build_volume

    # The inverse of radlens.prepare.slicing's display orientation, so a slice exported as
    # PNG and read back here is cut out again unchanged.
    volume = build_volume(image[::-1, ::-1].T[:, :, None], np.eye(4), source=path, allow_empty=allow_empty)
    volume.slice_normal = None
    return volume


def load_mask(item: SeriesItem) -> Volume:
    """The row's label map: PNG/``.npy`` ids (unscaled) for 2D images, NIfTI for volumes."""
    from radlens.io.images import PILLOW_SUFFIXES

    path = Path(item.mask or "")
    name = path.name.lower()
    if path.suffix.lower() in PILLOW_SUFFIXES + (".npy",):
        from radlens.io.images import read_image2d

        return _slice_volume(read_image2d(path), path, allow_empty=True)
    if name.endswith((".nii", ".nii.gz")):
        from radlens.io.nifti import read_mask

        return read_mask(path)
    raise InputError(path, "a mask must be NIfTI (.nii/.nii.gz) or, for a 2D image, PNG/.npy")


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """A 2D image (as a one-slice volume, values / 255) or a volume, with the row's modality."""
    from radlens.io.images import PILLOW_SUFFIXES

    path = Path(item.inputs[0])
    if path.suffix.lower() in PILLOW_SUFFIXES + (".npy",):
        from radlens.io.images import read_image2d

        volume = _slice_volume(read_image2d(path) / np.float32(_full_scale(path)), path)
    else:
        from radlens.io.reader import read_volume

        volume = read_volume(path)
    if item.modality:
        volume.metadata = volume.metadata.replace(Modality=item.modality)
    return volume
