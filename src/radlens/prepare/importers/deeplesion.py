"""DeepLesion (NIH Clinical Center): 16-bit PNG CT slices around bookmarked lesions and ``DL_info.csv``.

Layout (``/work/shared/FORMATS.md``): ``IN/DL_info.csv`` and ``IN/Images_png/<patient>_<study>_<series>/
<slice>.png`` (``000001_01_01/109.png``). One ``DL_info.csv`` row per lesion: ``File_name``
(``000001_01_01_109.png``, the key slice, naming the folder), ``Patient_index`` and ``Key_slice_index``
(both must agree with ``File_name``), ``Bounding_boxes`` (``"x1, y1, x2, y2"``: 0-based column/row
pixel coordinates of the key slice), ``Spacing_mm_px_`` (``"x, y, z"`` mm), and optionally
``Coarse_lesion_type`` (1-8, -1 unknown), ``Possibly_noisy`` (0/1), ``Train_Val_Test`` (1 train,
2 validation, 3 test). Other columns (``Study_index``, ``Series_ID``, ``Measurement_coordinates``,
``Slice_range``, ``DICOM_windows``, ...) are not used.

Only the series folders present are read (DeepLesion is 221 GB; a subset is normal): rows naming an
absent folder are passed over without a failure. What becomes of the rest:

- **Intensity.** The PNGs are uint16 holding HU + 32768 (DeepLesion's documented encoding); the
  volume is the stored value minus 32768, in HU (``SeriesItem.rescale = (1, -32768)``). Nothing is
  guessed: a PNG that is not 16-bit is refused. ``already_hu`` must be ``yes``.
- **Geometry.** A folder's slices are stacked in slice-number order; DeepLesion does not record the
  slice direction, and numbers are taken to run from head to feet (the instance order of these
  craniocaudal CT series), so in RAS+ ``slice_index`` 0 is the highest slice number. The affine is
  ``Spacing_mm_px_`` on an axial grid (image rows run anterior to posterior, columns patient's right to
  left, as the PNGs are displayed). A folder whose slice numbers have gaps (several lesions far apart)
  becomes one series per run of consecutive numbers, ``<folder>_<first>-<last>``; the folder's series id
  is the folder name when it is one run. ``slice_numbers`` (series column) gives the PNG number of
  every ``slice_index``.
- **Lesions.** Each row's box fills label 1 ("lesion") on its key slice only (DeepLesion marks only
  key slices, so slice-level ``lesion`` 0 means "no DL_info box here", not "lesion-free"): pixels whose
  centre lies within the box, ends rounded to the nearest pixel. One label for every lesion type: most
  rows have type -1 (DeepLesion types only its validation and test lesions), so one id per type would
  mostly say "unknown". The rows themselves (CSV line, key slice, box, type and its name, noisy flag) are
  the JSON series column ``lesions``. Several lesions on one slice share label 1, so that slice's
  ``boxes`` entry is their union; ``lesions`` keeps each box.
- **Patients and splits.** ``patient_id`` is the folder's patient part (DeepLesion's ``Patient_index``,
  already pseudonymous), ``study_id`` ``<patient>_<study>``. By default the split is DeepLesion's own
  ``Train_Val_Test`` (made by patient; ``official_split`` column), and a patient it gives two splits is
  an error; ``--split.keep_existing false`` splits by patient with radlens instead.
- **Failures.** A bad row (a malformed number, a box outside its image or upside down, a key slice that
  is not in the folder, a patient or key slice that disagrees with ``File_name``, a spacing that other
  rows of the series contradict) is a ``failures.csv`` line with path ``DL_info.csv`` and a reason starting
  ``line <n> (<File_name>)``, ``n`` the CSV line (the header is line 1); its series is prepared
  without that box. A folder with no usable row (its spacing unknown) is a failure of its own.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem
from radlens.prepare.importers.tables import read_table

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

TABLE = "DL_info.csv"
IMAGES = "Images_png"
OFFSET = 32768  # stored value = HU + OFFSET
LABELS = {0: "background", 1: "lesion"}
LESION_TYPES = {1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung", 6: "kidney", 7: "soft tissue",
                8: "pelvis", -1: "unknown"}
OFFICIAL_SPLITS = {1: "train", 2: "validation", 3: "test"}
REQUIRED = ("File_name", "Patient_index", "Key_slice_index", "Bounding_boxes", "Spacing_mm_px_")
NOTES = (
    "DeepLesion PNGs store HU + 32768 as uint16: values are the stored value minus 32768 (HU)",
    "slice numbers are taken to run head to feet (DeepLesion does not record the direction); "
    "series column slice_numbers gives each slice_index's PNG number",
    "label 1 'lesion' fills each DL_info.csv box on its key slice only; other slices are unmarked (lesion 0)",
    "patient ids are DeepLesion's Patient_index",
)
_FILE = re.compile(r"^(?P<patient>\d+)_(?P<study>\d+)_(?P<series>\d+)_(?P<slice>\d+)\.png$")
_FOLDER = re.compile(r"^(?P<patient>\d+)_(?P<study>\d+)_(?P<series>\d+)$")
_SLICE = re.compile(r"^(?P<slice>\d+)\.png$")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def default_config() -> PrepareConfig:
    """2D slices (every PNG kept), HU/1000 clipped to [-1500, 3071], the official split.

    The window keeps what the PNGs can show (up to 3071 HU) and reaches below air far enough that
    every usual CT window, lung's [-1350, 150] included, can be cut from the stored values later
    (``radlens.data.windows``)."""
    from radlens.prepare.intensity import IntensityConfig
    from radlens.prepare.pipeline import PrepareConfig
    from radlens.prepare.slicing import SliceConfig
    from radlens.prepare.splits import SplitConfig

    return PrepareConfig(
        dims=2,
        already_hu="yes",
        intensity=IntensityConfig(ct_window=(-1500.0, 3071.0), ct_output="hu/1000"),
        slicing=SliceConfig(min_foreground=0.0),
        split=SplitConfig(keep_existing=True, existing_col="split_given"),
    )


@dataclass
class _Folder:
    name: str
    patient: str
    study: str
    slices: dict[int, Path]  # slice number -> PNG


@dataclass
class _Row:
    line: int
    folder: str
    key: int
    box: tuple[float, float, float, float]
    spacing: tuple[float, float, float]
    kind: int
    noisy: int | None
    split: str | None

    def record(self) -> dict[str, Any]:
        return {"line": self.line, "key_slice": self.key, "box": list(self.box), "type": self.kind,
                "type_name": LESION_TYPES[self.kind], "noisy": self.noisy}


class _BadRow(Exception):
    """Why a DL_info.csv row cannot be used."""


def _numbers(text: str, count: int, column: str) -> tuple[float, ...]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise _BadRow(f"{column} {text!r} is not {count} comma-separated numbers")
    return values


def _integer(text: str, column: str, default: int | None = None) -> int | None:
    text = str(text).strip()
    if not text and default is not None:
        return default
    try:
        number = float(text)
    except ValueError:
        raise _BadRow(f"{column} {text!r} is not an integer") from None
    if not number.is_integer():
        raise _BadRow(f"{column} {text!r} is not an integer")
    return int(number)


def pixel_bounds(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Half-open ``(row0, col0, row1, col1)`` of the pixels whose centre (0-based integer
    coordinates) lies within ``x1, y1, x2, y2``, ends rounded to the nearest pixel (at least one)."""
    x1, y1, x2, y2 = box
    return math.floor(y1 + 0.5), math.floor(x1 + 0.5), math.floor(y2 + 0.5) + 1, math.floor(x2 + 0.5) + 1


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(path, f"cannot read image (truncated or corrupt?): {err}") from None
    return height, width


def _parse_row(row: dict[str, str], line: int, folders: dict[str, _Folder]) -> _Row | None:
    """A usable lesion row, None if its folder is absent, or _BadRow saying why not."""
    name = str(row["File_name"]).strip()
    match = _FILE.match(name)
    if match is None:
        raise _BadRow("File_name is not <patient>_<study>_<series>_<slice>.png")
    folder = f"{match['patient']}_{match['study']}_{match['series']}"
    if folder not in folders:
        return None  # a DeepLesion subset: folders not downloaded are not read
    for column, part in (("Patient_index", "patient"), ("Key_slice_index", "slice")):  # the folder is File_name's
        value = _integer(row[column], column)
        if value != int(match[part]):
            raise _BadRow(f"{column} {row[column]!r} differs from File_name's {match[part]}")
    key = int(match["slice"])
    png = folders[folder].slices.get(key)
    if png is None:
        raise _BadRow(f"key slice {key} is not in {IMAGES}/{folder}")
    box = _numbers(row["Bounding_boxes"], 4, "Bounding_boxes")
    if box[2] < box[0] or box[3] < box[1]:
        raise _BadRow(f"Bounding_boxes {row['Bounding_boxes']!r} has x2 < x1 or y2 < y1")
    try:
        height, width = _image_size(png)
    except InputError as err:
        raise _BadRow(f"its key slice {png.name}: {err.reason}") from None
    r0, c0, r1, c1 = pixel_bounds(box)  # type: ignore[arg-type]
    if r0 < 0 or c0 < 0 or r1 > height or c1 > width:
        raise _BadRow(f"Bounding_boxes {row['Bounding_boxes']!r} is outside the {width}x{height} (width x height) image")
    spacing = _numbers(row["Spacing_mm_px_"], 3, "Spacing_mm_px_")
    if min(spacing) <= 0:
        raise _BadRow(f"Spacing_mm_px_ {row['Spacing_mm_px_']!r} is not positive")
    kind = _integer(row.get("Coarse_lesion_type", ""), "Coarse_lesion_type", default=-1)
    if kind not in LESION_TYPES:
        raise _BadRow(f"Coarse_lesion_type {kind} is not 1-8 or -1")
    noisy_text = str(row.get("Possibly_noisy", "")).strip()
    noisy = _integer(noisy_text, "Possibly_noisy") if noisy_text else None
    split_text = str(row.get("Train_Val_Test", "")).strip()
    split = None
    if split_text:
        code = _integer(split_text, "Train_Val_Test")
        if code not in OFFICIAL_SPLITS:
            raise _BadRow(f"Train_Val_Test {split_text!r} is not 1, 2 or 3")
        split = OFFICIAL_SPLITS[code]
    return _Row(line, folder, key, box, spacing, kind, noisy, split)  # type: ignore[arg-type]


def _folders(images: Path, failures: list[Failure]) -> dict[str, _Folder]:
    """The series folders present under ``Images_png`` with their numbered slices."""
    found: dict[str, _Folder] = {}
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        rel = f"{IMAGES}/{folder.name}"
        match = _FOLDER.match(folder.name)
        if match is None:
            failures.append(Failure(rel, "discover", "not a DeepLesion series folder (<patient>_<study>_<series>)"))
            continue
        slices: dict[int, Path] = {}
        for png in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png"):
            number = _SLICE.match(png.name)
            if number is None:
                failures.append(Failure(f"{rel}/{png.name}", "discover", "not a <slice number>.png"))
            elif int(number["slice"]) in slices:
                failures.append(Failure(f"{rel}/{png.name}", "discover",
                                        f"slice {int(number['slice'])} is also {slices[int(number['slice'])].name}"))
            else:
                slices[int(number["slice"])] = png
        if slices:
            found[folder.name] = _Folder(folder.name, match["patient"], match["study"], slices)
        else:
            failures.append(Failure(rel, "discover", "no <slice>.png files"))
    return found


def _runs(numbers: list[int]) -> list[list[int]]:
    """Sorted slice numbers cut into runs of consecutive numbers."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def _check_official_splits(rows: list[_Row], folders: dict[str, _Folder], table: Path) -> None:
    seen: dict[str, tuple[str, int]] = {}
    for row in rows:
        if row.split is None:
            continue
        patient = folders[row.folder].patient
        first = seen.setdefault(patient, (row.split, row.line))
        if first[0] != row.split:
            raise InputError(table, f"patient {patient} is in Train_Val_Test {first[0]} (line {first[1]}) and "
                                    f"{row.split} (line {row.line}); split by patient with --split.keep_existing false")


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per run of consecutive slices of each series folder present, with its lesion rows."""
    if cfg.already_hu != "yes":
        raise ConfigError("DeepLesion PNGs hold HU + 32768 (no slope/intercept to apply): set already_hu to 'yes'")
    table, images = root / TABLE, root / IMAGES
    if not table.is_file():
        raise InputError(root, f"no {TABLE} (DeepLesion's lesion table) in the folder")
    if not images.is_dir():
        raise InputError(root, f"no {IMAGES} folder")
    records = read_table(table, REQUIRED, dtype=str, keep_default_na=False).to_dict("records")
    failures: list[Failure] = []
    folders = _folders(images, failures)
    rows: list[_Row] = []
    for index, record in enumerate(records):
        line = index + 2  # the header is line 1
        try:
            parsed = _parse_row(record, line, folders)
        except _BadRow as why:
            failures.append(Failure(TABLE, "discover", f"line {line} ({str(record['File_name']).strip()}): {why}"))
            continue
        if parsed is not None:
            rows.append(parsed)
    by_folder: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        first = by_folder[row.folder][0] if by_folder[row.folder] else None
        if first is not None and not np.allclose(row.spacing, first.spacing, rtol=1e-4, atol=1e-6):
            failures.append(Failure(TABLE, "discover", f"line {row.line} ({row.folder}_{row.key:03d}.png): Spacing_mm_px_ "
                                                       f"{list(row.spacing)} differs from line {first.line}'s {list(first.spacing)}"))
            continue
        by_folder[row.folder].append(row)
    if cfg.split.keep_existing:
        _check_official_splits([r for rs in by_folder.values() for r in rs], folders, table)
    items: list[SeriesItem] = []
    for name, folder in folders.items():
        lesions = by_folder.get(name, [])
        if not lesions:
            failures.append(Failure(f"{IMAGES}/{name}", "discover",
                                    f"no usable {TABLE} row names this series: its pixel spacing is unknown"))
            continue
        splits = {r.split for r in lesions if r.split is not None}
        runs = _runs(list(folder.slices))
        for run in runs:
            series_id = name if len(runs) == 1 else f"{name}_{run[0]:03d}-{run[-1]:03d}"
            fields: dict[str, Any] = {
                "slice_numbers": run[::-1],  # by slice_index: RAS+ runs feet to head
                "lesions": json.dumps([r.record() for r in lesions if r.key in run], separators=(",", ":")),
                "official_split": ",".join(sorted(splits)),  # one split unless the table contradicts itself
                "spacing_mm_px": list(lesions[0].spacing),
            }
            if splits:
                fields["split_given"] = next(iter(splits))
            items.append(
                SeriesItem(
                    series_id=series_id,
                    patient_id=folder.patient,
                    study_id=f"{folder.patient}_{folder.study}",
                    source_path=f"{IMAGES}/{name}",
                    inputs=tuple(str(folder.slices[n]) for n in run),
                    modality="CT",
                    text="",  # DeepLesion has no reports; a metadata caption would say nothing
                    rescale=(1.0, -float(OFFSET)),
                    mask=str(table),
                    mask_labels=dict(LABELS),
                    fields=fields,
                )
            )
    return Discovery(items, failures)


def _read_png(path: Path) -> np.ndarray:
    """A 16-bit PNG's stored values as float32 ``(H, W)``; other PNGs are refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in _SIXTEEN_BIT:
                raise InputError(path, f"{mode} PNG; DeepLesion slices are 16-bit grey PNGs storing HU + {OFFSET}")
            img.load()
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(path, f"cannot read image (truncated or corrupt?): {err}") from None
    if array.ndim != 2:
        raise InputError(path, f"expected one grey 2D image, got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise InputError(path, f"values {array.min()}..{array.max()} are not 16-bit")
    return array.astype(np.float32)


def _affine(item: SeriesItem) -> np.ndarray:
    """Stored axes (column, row, slice-number order) to RAS mm: columns run to the patient's left,
    rows to posterior, slice numbers to inferior."""
    sx, sy, sz = (float(v) for v in item.fields["spacing_mm_px"])
    return np.diag([-sx, -sy, -sz, 1.0])


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """The run's PNGs stacked as an axial CT volume in HU (stored value - 32768)."""
    from radlens.io.build import build_volume
    from radlens.io.metadata import AcquisitionMetadata

    slope, intercept = item.rescale or (1.0, -float(OFFSET))
    first = _read_png(Path(item.inputs[0]))
    data = np.empty((first.shape[1], first.shape[0], len(item.inputs)), dtype=np.float32)
    for k, name in enumerate(item.inputs):
        image = first if k == 0 else _read_png(Path(name))
        if image.shape != first.shape:
            raise InputError(name, f"image size {image.shape[::-1]} differs from {Path(item.inputs[0]).name}'s "
                                   f"{first.shape[::-1]} (width, height)")
        data[:, :, k] = image.T * np.float32(slope) + np.float32(intercept)
    volume = build_volume(data, _affine(item), source=Path(item.inputs[0]).parent,
                          metadata=AcquisitionMetadata(Modality="CT"), hu=True)
    return volume


def load_mask(item: SeriesItem) -> Volume:
    """The run's label map: 1 inside each lesion box on its key slice, on the image's voxel grid."""
    from radlens.io.build import build_volume

    height, width = _image_size(Path(item.inputs[0]))
    numbers = [int(Path(p).stem) for p in item.inputs]
    data = np.zeros((width, height, len(numbers)), dtype=np.uint8)
    for lesion in json.loads(item.fields["lesions"]):
        r0, c0, r1, c1 = pixel_bounds(tuple(lesion["box"]))  # type: ignore[arg-type]
        data[c0:c1, r0:r1, numbers.index(lesion["key_slice"])] = 1
    return build_volume(data, _affine(item), source=item.mask, allow_empty=True)
