"""M3D-Cap style folders (the 3D CLIP tutorial): ``dataset.json`` + ``<sample>/img.npy`` + ``text.txt``.

Axis mapping: M3D stores ``img.npy`` as ``(1, D, H, W)`` float32 in [0, 1] — the
``SimpleITK.GetArrayFromImage`` order, slices first. radlens reads it as the RAS+ volume
``(1, X, Y, Z) = img.transpose(0, 3, 2, 1)`` (X = W, Y = H, Z = D) with a 1 mm identity affine:
the files carry neither spacing nor orientation, so both are unknown and the card says so.
:mod:`radlens.prepare.exporters.m3d` writes the inverse, so export -> import is exact.

Splits come from ``dataset.json`` (``train``/``validation``/``test``; other keys such as
``test1k`` only add samples not listed already). M3D has no patient ids, so each sample folder
is its own patient (the tutorial's ``data_folder/000007/img.npy`` -> patient ``data_folder_000007``)
unless an entry carries a ``patient_id`` key (radlens' exporter writes one) or the user gives a
grouping rule, ``PrepareConfig.patient_from`` (``parent``: the folder above the sample folder; or a
regular expression, see :mod:`radlens.prepare.importers.paths`). Paths must stay inside the folder
(no ``..``, no absolute path elsewhere): ``dataset.json`` is refused otherwise, naming the entry.
The series id is the sample folder's path with ``/`` -> ``_``; two entries that give one id are refused.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

SPLIT_KEYS = ("train", "validation", "test")
NOTES = (
    "M3D img.npy (1, D, H, W) read as (1, X, Y, Z) = img.transpose(0, 3, 2, 1); spacing and orientation "
    "unknown (1 mm identity affine assumed)",
    "M3D has no patient ids: an entry's patient_id key, else patient_from (default: each sample folder is one patient)",
)
D_H_W_TO_X_Y_Z = (0, 3, 2, 1)


def default_config() -> PrepareConfig:
    """3D volumes as stored (M3D arrays are already resized and in [0, 1]); splits from dataset.json."""
    from radlens.prepare.pipeline import PrepareConfig
    from radlens.prepare.splits import SplitConfig

    return PrepareConfig(dims=3, split=SplitConfig(keep_existing=True, existing_col="split_given"))


def _entries(root: Path) -> list[tuple[str, int, Any]]:
    """``(split key, index in that list, entry)`` of every sample ``dataset.json`` lists."""
    path = root / "dataset.json"
    if not path.is_file():
        raise InputError(root, "no dataset.json (an M3D folder lists its samples there)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 text: {err}") from None
    except json.JSONDecodeError as err:
        raise InputError(path, f"malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(path, "dataset.json must map split names to lists of samples")
    keys = [k for k in SPLIT_KEYS if k in data] + sorted(k for k in data if k not in SPLIT_KEYS)
    out = []
    for key in keys:
        if not isinstance(data[key], list):
            raise InputError(path, f"{key!r} must be a list of samples")
        out.extend((key, i, entry) for i, entry in enumerate(data[key]))
    return out


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per sample of ``dataset.json``; paths, patients and ids are checked before any work."""
    from radlens.prepare.importers.paths import listed_path, patient_of, patient_rule

    if not root.is_dir():
        raise InputError(root, "an M3D input must be a folder")
    listing = root / "dataset.json"
    rule = patient_rule(cfg.patient_from)
    items: list[SeriesItem] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    ids: dict[str, str] = {}
    for split, i, entry in _entries(root):
        where = f"{split}[{i}]"
        image = entry.get("image") if isinstance(entry, dict) else None
        text_file = entry.get("text") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not isinstance(text_file, str):
            failures.append(Failure(f"dataset.json:{where}", "discover", f"sample without image/text paths: {entry!r}"))
            continue
        image_path, image_rel = listed_path(root, image, listing, f"{where} image")
        text_path, text_rel = listed_path(root, text_file, listing, f"{where} text")
        if image_rel in seen:
            continue
        seen.add(image_rel)
        folder = PurePosixPath(image_rel).parent
        sample = "_".join(folder.parts) or PurePosixPath(image_rel).stem
        if sample in ids:
            raise InputError(listing, f"{ids[sample]} and {where} both give the series id {sample!r} "
                                      f"({sample!r} from two sample paths); rename one folder")
        ids[sample] = where
        given = entry.get("patient_id")
        if given is not None and (not isinstance(given, (str, int)) or not str(given).strip()):
            raise InputError(listing, f"{where}: patient_id must be a non-empty string, got {given!r}")
        patient = str(given).strip() if given is not None else patient_of(rule, cfg.patient_from, image_rel, listing, where)
        missing = [rel for p, rel in ((image_path, image_rel), (text_path, text_rel)) if not p.is_file()]
        if missing:
            failures.append(Failure(image_rel, "discover", f"no such file: {missing[0]}"))
            continue
        try:
            text = text_path.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as err:
            failures.append(Failure(image_rel, "discover", f"{text_rel} is not UTF-8 text: {err}"))
            continue
        items.append(
            SeriesItem(
                series_id=sample,
                patient_id=patient,
                study_id=sample,
                source_path=image_rel,
                inputs=(str(image_path), str(text_path)),
                text=text,
                fields={"split_given": split},
            )
        )
    return Discovery(items, failures)


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """``img.npy`` ``(1, D, H, W)`` (or ``(D, H, W)``) as a RAS+ volume with a 1 mm identity affine."""
    from radlens.io.build import build_volume

    try:
        img = np.load(item.inputs[0], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(item.source_path, f"cannot read as .npy: {err}") from None
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4 or img.shape[0] != 1:
        raise InputError(item.source_path, f"expected (1, D, H, W), got shape {list(img.shape)}")
    data = np.asarray(img).transpose(D_H_W_TO_X_Y_Z)[0]
    return build_volume(data, np.eye(4), source=item.source_path)
