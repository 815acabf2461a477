"""Export a prepared dataset with masks as an nnU-Net v2 raw dataset (``OUT/Dataset{id:03d}_{name}/``).

Layout (nnU-Net's ``dataset_format.md``; ``radlens prepare nnunet`` reads it back)::

    OUT/Dataset{id:03d}_{name}/
      dataset.json            channel_names, labels (name -> consecutive id, background 0), numTraining,
                              file_ending, name, description (+ overwrite_image_reader_writer for PNG)
      imagesTr/{case}_0000{ending}   labelsTr/{case}{ending}
      imagesTs/{case}_0000{ending}   labelsTs/{case}{ending}     (the ``test_split``, when given)
      cases.csv               case -> folder, series, patient, slice, source split, contrast
      radlens_export.json     source, options, label id mapping, fingerprint (what a rerun checks)

- ``dim 2`` (MRGen's route): one case per slice, ``{series}_{slice:04d}``, as grey PNG (``.png``,
  ``NaturalImage2DIO``). A 2D dataset's stored slices are written as they are; a 3D dataset's volumes are
  cut into axial slices (radiological display: anterior up, patient's right on the left). The image is
  the prepared float slice mapped linearly from the dataset's value range (MRI [0, 1]; CT its window) to
  the full range of ``png_dtype`` (uint8: 0..255, uint16: 0..65535), clipped; the label map is a uint8 PNG.
- ``dim 3``: one case per series, ``{series}``, as NIfTI (``.nii.gz``): the prepared float32 volume and its
  uint8 label map with one affine, the prepared grid (RAS voxel order, the ``spacing`` of ``series.parquet``,
  origin 0). A 2D dataset has no 3D geometry and is refused for ``dim 3``.
- Labels: the dataset's ids, in order, become ``0..K`` (nnU-Net wants consecutive integers; a 0/255 mask is
  its classic failure); the mapping is in ``radlens_export.json``. Series without a mask are left out.
- Channel: one, named ``CT`` for CT datasets (nnU-Net's CT normalisation, which is unchanged by the linear
  window mapping) and ``MRI`` otherwise (z-score), unless ``channel_name`` says otherwise.

Every file is written atomically (temporary ``.*.tmp`` names, which nnU-Net's file listing never picks
up). A rerun with the same source and options completes an interrupted export and rewrites nothing that
exists; a folder holding another export (other source or options), files radlens did not write, or another
dataset with the same id under OUT is refused, naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.common.atomic import check_output, write_bytes_atomic, write_csv_atomic, write_json_atomic, write_marker
from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import safe_name

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.prepared import PreparedDataset

PROVENANCE = "radlens_export.json"
FORMAT = "radlens-nnunet-export"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ExportOptions:
    """What decides an export's files (recorded, and compared on a rerun)."""

    dim: int
    test_split: str | None
    splits: tuple[str, ...]
    contrasts: tuple[str, ...]
    png_dtype: str
    channel_name: str


@dataclass(frozen=True)
class Case:
    """One nnU-Net case: its identifier, folder pair (Tr/Ts) and where its pixels come from."""

    case: str
    folder: str  # "Tr" or "Ts"
    series_id: str
    patient_id: str
    split: str
    contrast: str
    row: int  # 2D: slice row of the stored stack (2D dataset) or z index (3D dataset); 3D: -1
    item: int = -1  # 2D dataset: the slice's row number in slices.parquet


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}`` (nnU-Net's naming); ConfigError for an id outside 1..999 or an unsafe name."""
    if not 1 <= dataset_id <= 999:
        raise ConfigError(f"dataset_id must be 1..999 (nnU-Net's three digits), got {dataset_id}")
    if not _NAME.match(name):
        raise ConfigError(f"name {name!r}: use letters, digits, '_' and '-' (it becomes the folder Dataset{dataset_id:03d}_{name})")
    return f"Dataset{dataset_id:03d}_{name}"


def label_mapping(labels: dict[int, str]) -> list[dict[str, Any]]:
    """The dataset's label ids in order -> consecutive nnU-Net ids (background 0), with their names."""
    if not labels or 0 not in labels:
        raise ConfigError("the dataset has no label table with background 0")
    names = [labels[i] for i in sorted(labels)]
    if len(set(names)) != len(names):
        raise ConfigError(f"label names must be unique to name nnU-Net labels, got {names}")
    return [{"name": "background" if i == 0 else labels[i], "source_id": int(i), "nnunet_id": k}
            for k, i in enumerate(sorted(labels))]


def _fingerprint(ds: PreparedDataset, options: ExportOptions) -> str:
    digest = hashlib.sha256(json.dumps(asdict(options), sort_keys=True).encode())
    for name in ("dataset.json", "series.parquet", "slices.parquet"):
        path = ds.path / name
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()


def _cases(ds: PreparedDataset, options: ExportOptions) -> list[Case]:
    """Every case to write, in table order: masked series of the chosen splits (and contrasts)."""
    series = ds.series
    if "mask_path" not in series.columns or not (series["mask_path"].fillna("") != "").any():
        raise InputError(ds.path, "has no masks: an nnU-Net dataset needs a label map per case")
    chosen = series[series["mask_path"].fillna("") != ""]
    if options.contrasts:
        if "contrast" not in series.columns:
            raise InputError(ds.path / "series.parquet", "has no 'contrast' column: series cannot be chosen by contrast class")
        chosen = chosen[chosen["contrast"].isin(options.contrasts)]
    contrast = chosen["contrast"].fillna("").astype(str) if "contrast" in chosen.columns else None
    info = {row.series_id: (row.patient_id, "" if contrast is None else contrast[i]) for i, row in chosen.iterrows()}
    cases: list[Case] = []
    if ds.dims == 2:
        slices = ds.slices
        assert slices is not None
        chosen_rows = (slices["series_id"].isin(set(info)) & slices["split"].isin(options.splits)).to_numpy()
        keep = slices[chosen_rows]
        for item, row in zip(np.flatnonzero(chosen_rows), keep.itertuples()):
            folder = "Ts" if row.split == options.test_split else "Tr"
            patient, con = info[row.series_id]
            cases.append(Case(f"{safe_name(row.series_id)}_{int(row.row):04d}", folder, row.series_id, patient, row.split,
                              con, int(row.row), int(item)))
    else:
        for _, row in chosen[chosen["split"].isin(options.splits)].iterrows():
            folder = "Ts" if row["split"] == options.test_split else "Tr"
            patient, con = info[row["series_id"]]
            depth = int(ds.array(row["series_id"]).shape[-1]) if options.dim == 2 else 0
            if options.dim == 3:
                cases.append(Case(safe_name(row["series_id"]), folder, row["series_id"], patient, row["split"], con, -1))
            for z in range(depth):
                cases.append(Case(f"{safe_name(row['series_id'])}_{z:04d}", folder, row["series_id"], patient,
                                  row["split"], con, z))
    if not cases:
        raise InputError(ds.path, f"no masked series in splits {list(options.splits)}"
                                  + (f" of contrast {list(options.contrasts)}" if options.contrasts else ""))
    names = [c.case for c in cases]
    if len(set(names)) != len(names):
        raise InputError(ds.path, "two series give the same case name after making their ids file-safe; rename one")
    return cases


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _nifti(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A ``.nii.gz`` (sform and qform = ``affine``) as bytes, gzipped without a timestamp."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=3, mtime=0)


def _scale(image: np.ndarray, value_range: tuple[float, float], png_dtype: str) -> np.ndarray:
    """Prepared float intensities -> ``png_dtype`` over its full range (the dataset's value range, clipped)."""
    lo, hi = value_range
    top = 255.0 if png_dtype == "uint8" else 65535.0
    unit = np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    return np.rint(unit * top).astype(png_dtype)


def _display(plane: np.ndarray) -> np.ndarray:
    """An axial RAS ``(X, Y)`` plane in radiological display: anterior up, patient's right on the left."""
    return np.ascontiguousarray(plane[::-1, ::-1].T)


class _Writer:
    """Writes one case's image and label files (skipping files a previous run completed)."""

    def __init__(self, ds: PreparedDataset, folder: Path, options: ExportOptions, lookup: np.ndarray) -> None:
        self.ds, self.folder, self.options, self.lookup = ds, folder, options, lookup
        self.ending = ".png" if options.dim == 2 else ".nii.gz"
        self.spacing = ds.series.set_index("series_id")["spacing"] if "spacing" in ds.series.columns else None
        self.written: set[str] = set()

    def paths(self, case: Case) -> tuple[str, str]:
        return (f"images{case.folder}/{case.case}_0000{self.ending}", f"labels{case.folder}/{case.case}{self.ending}")

    def _labels(self, mask: np.ndarray) -> np.ndarray:
        values = np.asarray(mask, dtype=np.int64)
        if values.min() < 0 or values.max() >= len(self.lookup) or (self.lookup[values] < 0).any():
            raise InputError(self.ds.path, f"a mask holds ids {sorted(set(np.unique(values).tolist()))} outside the label table")
        return self.lookup[values].astype(np.uint8)

    def pixels(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """(image, label map) of a case, as they are written."""
        ds = self.ds
        if ds.dims == 2:
            return np.asarray(ds.slice(case.item)), np.asarray(ds.slice_mask(case.item))
        volume, mask = np.asarray(ds.array(case.series_id))[0], np.asarray(ds.mask(case.series_id))[0]  # type: ignore[index]
        if case.row >= 0:
            return _display(volume[:, :, case.row]), _display(mask[:, :, case.row])
        return volume, mask

    def write(self, case: Case) -> None:
        image_rel, label_rel = self.paths(case)
        self.written.update((image_rel, label_rel))
        if (self.folder / image_rel).is_file() and (self.folder / label_rel).is_file():
            return
        image, mask = self.pixels(case)
        labels = self._labels(mask)
        if self.options.dim == 2:
            data = {image_rel: _png(_scale(image, self.ds.value_range, self.options.png_dtype)), label_rel: _png(labels)}
        else:
            spacing = [float(s) for s in self.spacing[case.series_id]] if self.spacing is not None else [1.0, 1.0, 1.0]
            affine = np.diag([*spacing, 1.0])
            data = {image_rel: _nifti(image.astype(np.float32), affine), label_rel: _nifti(labels, affine)}
        for rel, payload in data.items():
            if not (self.folder / rel).is_file():
                write_bytes_atomic(self.folder / rel, payload)


def _claim(folder: Path, out: Path, fingerprint: str, provenance: dict[str, Any]) -> None:
    """Refuse a folder that holds something else; otherwise record (first) what this export is."""
    prefix = folder.name.split("_", 1)[0] + "_"
    clash = sorted(p.name for p in out.glob(f"{prefix}*") if p.is_dir() and p.name != folder.name) if out.is_dir() else []
    if clash:
        raise InputError(out / clash[0], f"another nnU-Net dataset with id {prefix[7:10]} (nnU-Net needs unique ids); "
                                         "choose another --dataset_id")
    existing = folder / PROVENANCE
    if existing.is_file():
        try:
            old = json.loads(existing.read_text())
        except (OSError, ValueError) as err:
            raise InputError(existing, f"unreadable ({err}); delete the folder to export again") from None
        if old.get("fingerprint") != fingerprint:
            raise InputError(folder, f"holds another export (from {old.get('source')!r} with options {old.get('options')}); "
                                     "choose another --dataset_id/--name or OUT, or delete it")
        return
    if folder.is_dir() and any(folder.iterdir()):
        check_output(folder)  # files radlens did not write: refused, naming the folder
        raise InputError(folder, "holds another radlens output, not this export; choose another --dataset_id/--name or OUT")
    write_json_atomic(existing, provenance)
    write_marker(folder, {PROVENANCE}, "export nnunet")


def _remove_temporaries(folder: Path) -> None:
    """Temporary files (``.<name>.<random>.tmp``) that a killed export left behind."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "."):
        if (folder / sub).is_dir():
            for path in (folder / sub).glob(".*.tmp"):
                path.unlink(missing_ok=True)


def export_nnunet(
    prepared: str | Path,
    out: str | Path,
    dataset_id: int = 1,
    name: str = "Radlens",
    dim: int | None = None,
    test_split: str | None = None,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    contrasts: tuple[str, ...] = (),
    png_dtype: Literal["uint8", "uint16"] = "uint8",
    channel_name: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``OUT/Dataset{id:03d}_{name}`` from the prepared dataset ``prepared``; returns the dataset folder."""
    from tqdm import tqdm

    from radlens.io.prepared import SPLITS, PreparedDataset

    ds = PreparedDataset(prepared)
    dim = ds.dims if dim is None else dim
    if dim not in (2, 3):
        raise ConfigError(f"dim must be 2 (PNG slices) or 3 (NIfTI volumes), got {dim}")
    if dim == 3 and ds.dims == 2:
        raise InputError(ds.path, "a 2D dataset's slices have no 3D geometry: export it with --dim 2, or prepare with dims 3")
    if png_dtype not in ("uint8", "uint16"):
        raise ConfigError(f"png_dtype must be uint8 or uint16, got {png_dtype!r}")
    wanted = tuple(splits) + ((test_split,) if test_split and test_split not in splits else ())
    unknown = sorted(set(wanted) - set(SPLITS))
    if unknown:
        raise ConfigError(f"unknown split(s) {unknown}; splits are {', '.join(SPLITS)}")
    channel = channel_name or ("CT" if ds.card.get("modality") == "CT" else "MRI")
    options = ExportOptions(dim, test_split, wanted, tuple(contrasts), png_dtype, channel)
    mapping = label_mapping(ds.labels)
    if dim == 2 and len(mapping) > 256:
        raise ConfigError(f"{len(mapping)} labels do not fit a uint8 PNG label map (nnU-Net's 2D writer); export with --dim 3")
    cases = _cases(ds, options)
    if not any(c.folder == "Tr" for c in cases):
        raise InputError(ds.path, f"no training case: every chosen case is in the test split {test_split!r} (imagesTs)")
    folder = Path(out) / dataset_folder_name(dataset_id, name)
    fingerprint = _fingerprint(ds, options)
    provenance = {"format": FORMAT, "fingerprint": fingerprint, "source": str(ds.path.resolve()), "options": asdict(options),
                  "labels": mapping,
                  "png_intensity": (f"prepared values {list(ds.value_range)} -> 0..{255 if png_dtype == 'uint8' else 65535} "
                                    f"({png_dtype}), clipped") if dim == 2 else None}
    _claim(folder, Path(out), fingerprint, provenance)
    _remove_temporaries(folder)
    lookup = np.full(max(ds.labels) + 1, -1, dtype=np.int64)
    for entry in mapping:
        lookup[entry["source_id"]] = entry["nnunet_id"]
    writer = _Writer(ds, folder, options, lookup)
    for case in tqdm(cases, desc="export nnunet", unit="case", disable=None):
        writer.write(case)
    n_train = sum(c.folder == "Tr" for c in cases)
    dataset: dict[str, Any] = {
        "name": name,
        "description": description or f"radlens export of {ds.path.name} ({'2D PNG slices' if dim == 2 else '3D NIfTI volumes'})",
        "channel_names": {"0": channel},
        "labels": {m["name"]: m["nnunet_id"] for m in mapping},
        "numTraining": n_train,
        "file_ending": writer.ending,
    }
    if dim == 2:
        dataset["overwrite_image_reader_writer"] = "NaturalImage2DIO"
    write_csv_atomic(folder / "cases.csv", _case_table(cases, writer))
    write_json_atomic(folder / "dataset.json", dataset)
    write_marker(folder, writer.written | {PROVENANCE, "cases.csv", "dataset.json"}, "export nnunet")
    return folder


def _case_table(cases: list[Case], writer: _Writer) -> pd.DataFrame:
    import pandas as pd

    rows = [{"case": c.case, "image": writer.paths(c)[0], "label": writer.paths(c)[1], "series_id": c.series_id,
             "patient_id": c.patient_id, "slice": c.row if c.row >= 0 else None, "split": c.split, "contrast": c.contrast}
            for c in cases]
    return pd.DataFrame(rows)


def nnunet(
    prepared: Path,
    out: Path,
    dataset_id: int = 1,
    name: str = "Radlens",
    dim: int | None = None,
    test_split: str | None = None,
    splits: list[str] | None = None,
    contrasts: list[str] | None = None,
    png_dtype: Literal["uint8", "uint16"] = "uint8",
    channel_name: str | None = None,
    description: str | None = None,
) -> int:
    """Export a prepared dataset with masks as an nnU-Net v2 raw dataset OUT/Dataset{id:03d}_{name} (PNG slices or NIfTI volumes).

    Args:
        prepared: a prepared dataset folder with masks (2D or 3D).
        out: the nnU-Net raw folder (nnUNet_raw) the dataset folder is written into.
        dataset_id: nnU-Net dataset id, 1..999 (the 001 of Dataset001_Name).
        name: dataset name (letters, digits, '_', '-').
        dim: 2 writes one PNG per slice (MRGen's route), 3 one NIfTI per series (default: the dataset's dims).
        test_split: this split goes to imagesTs/labelsTs instead of imagesTr/labelsTr (e.g. test).
        splits: the splits to export (default: all).
        contrasts: export only the series of these contrast classes (series column ``contrast``).
        png_dtype: PNG image depth, uint8 (0..255) or uint16 (0..65535), the dataset's value range mapped onto it.
        channel_name: the channel's name in dataset.json (default: CT for CT, else MRI; nnU-Net normalises by it).
        description: dataset.json description (default: names the source).
    """
    folder = export_nnunet(prepared, out, dataset_id, name, dim, test_split,
                           tuple(splits) if splits else ("train", "validation", "test"), tuple(contrasts or ()), png_dtype,
                           channel_name, description)
    data = json.loads((folder / "dataset.json").read_text())
    print(f"exported {data['numTraining']} training cases ({data['file_ending']}) -> {folder}")
    return 0

