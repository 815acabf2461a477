"""CLEAR's lesion table: ``image,lesion_present,patient_id``, one row per 2D slice image.

The table of CLEAR's README (``/work/shared/FORMATS.md``; ``patient_001_slice_001.png,1,patient_001``)
with its images. ``IN`` is the CSV file, or a folder holding exactly one ``.csv``; images are found
relative to the CSV's folder, trying in order ``<image>``, ``<patient_id>/<image>`` and, when the name
starts with ``<patient_id>_``, ``<patient_id>/<rest of the name>`` (the README's
``patient_001_slice_001.png`` for its layout ``patient_001/slice_001.png``); absolute paths are taken as
they are. Images are PNG/JPEG/TIFF/BMP/``.npy`` (integer images scaled by their white level to [0, 1],
as the ``csv`` source does: CLEAR's PNGs are already windowed) or a NIfTI holding one 2D slice (values
as stored). The modality is not known, so no CT window or MRI normalisation is applied.

Each image is a one-slice series of a 2D dataset, its patient the row's ``patient_id`` (study = patient).
``lesion_present`` becomes the slice's ``lesion`` in ``slices.parquet`` (1, 0, and -1 for an empty cell)
through ``SeriesItem.lesion``: there is no mask, so ``mask_path`` is empty and ``labels_present``/
``boxes`` are null. Splits are by patient (radlens' split).

Errors: a missing column, a ``lesion_present`` other than 0/1/empty, or an empty ``patient_id`` is an
InputError naming the CSV and its line (the header is line 1) before any work; an image that is not
found, or listed twice, is a ``failures.csv`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

COLUMNS = ("image", "lesion_present", "patient_id")
NOTES = (
    "slice-level lesion flags from CLEAR's lesion_present (no masks or boxes)",
    "images as stored: integer images / their white level, NIfTI values unchanged",
)
_FLAGS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "": -1}


def default_config() -> PrepareConfig:
    """2D, one slice per image (never dropped as background: its flag matters), split by patient."""
    from radlens.prepare.pipeline import PrepareConfig
    from radlens.prepare.slicing import SliceConfig

    return PrepareConfig(dims=2, slicing=SliceConfig(min_foreground=0.0))


def _candidates(base: Path, image: str, patient: str) -> list[Path]:
    paths = [base / image, base / patient / image]
    if image.startswith(f"{patient}_") and "/" not in image:
        paths.append(base / patient / image[len(patient) + 1 :])
    return paths


def _series_id(rel: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if rel.lower().endswith(suffix):
            return rel[: -len(suffix)].replace("/", "_")
    return rel.rsplit(".", 1)[0].replace("/", "_")


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per CSV row; the header and every flag are checked before any work."""
    from radlens.prepare.importers.tables import find_table, read_table

    if cfg.dims != 2:
        raise ConfigError("CLEAR images are 2D slices: prepare them with dims 2")
    table = find_table(root)
    frame = read_table(table, COLUMNS, dtype=str, keep_default_na=False)
    rows = []
    for index, (image, flag, patient) in enumerate(zip(frame["image"], frame["lesion_present"], frame["patient_id"])):
        line = index + 2
        if flag.strip() not in _FLAGS:
            raise InputError(table, f"line {line} ({image}): lesion_present {flag!r} is not 0, 1 or empty")
        if not patient.strip():
            raise InputError(table, f"line {line} ({image}): no patient_id")
        rows.append((line, image.strip(), _FLAGS[flag.strip()], patient.strip()))
    base = table.parent
    items: list[SeriesItem] = []
    failures: list[Failure] = []
    seen: dict[str, int] = {}
    for line, image, lesion, patient in rows:
        candidates = _candidates(base, image, patient)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            tried = ", ".join(p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p) for p in candidates)
            failures.append(Failure(image, "discover", f"line {line}: no such file (looked for {tried})"))
            continue
        path = path.resolve()
        rel = path.relative_to(base.resolve()).as_posix() if path.is_relative_to(base.resolve()) else str(path)
        series_id = _series_id(rel)
        if series_id in seen:
            failures.append(Failure(image, "discover", f"line {line}: {rel} is already listed on line {seen[series_id]}"))
            continue
        seen[series_id] = line
        safe_patient = patient.replace("/", "_")
        items.append(
            SeriesItem(
                series_id=series_id,
                patient_id=safe_patient,
                study_id=safe_patient,
                source_path=rel,
                inputs=(str(path),),
                text="",
                lesion=lesion,
            )
        )
    return Discovery(items, failures)


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """The image as a one-slice volume (the ``csv`` source's reading); a NIfTI must hold one slice."""
    from radlens.prepare.importers.csv import load as load_image

    volume = load_image(item, cfg)
    if min(volume.shape) != 1:
        raise InputError(item.inputs[0], f"holds a volume of shape {list(volume.shape)}; a CLEAR image is one 2D slice")
    return volume
