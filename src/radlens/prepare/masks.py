"""Label maps beside images: label tables, one label scheme per dataset, values, boxes.

A label map (mask) is an integer array in its image's geometry; ``0`` is background. Its ids
get names from a *label table* the source provides (a BIDS ``*_dseg.tsv``/``.json``, the CT
phantom's ``masks/labels.json``, nnU-Net's ``dataset.json`` ``labels``, a ``labels.json`` beside a
CSV). A binary mask (BIDS ``*_desc-<name>_mask``) is the table ``{0: background, 1: <name>}``
and any single non-zero value (1, 255) becomes 1. Without a table the ids are kept and named
``label_<id>``. A prepared dataset has one scheme: importers merge the tables of their items in
discovery order (:class:`SchemeMerger`) and refuse, naming the file, a table that gives an id
another name; the card's ``labels`` is the merge of the prepared series' tables (:func:`merge_schemes`).

Boxes are half-open ``[lo..., hi...]`` voxel bounds in the array's index order (the
``radlens.prepare.spatial.Box`` convention), so ``array[lo0:hi0, lo1:hi1, ...]`` is the box.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError

if TYPE_CHECKING:
    from radlens.io.volume import Volume

BACKGROUND = "background"
MAX_LABEL = 65535  # uint16
# World positions of mask and image voxels must agree to this many mm (float32 headers round).
AFFINE_TOLERANCE_MM = 1e-3
_CHUNK = 1 << 22  # voxels per bincount

Scheme = dict[int, str]


def open_name(label: int) -> str:
    """The name of an id that no label table names."""
    return BACKGROUND if label == 0 else f"label_{label}"


def _as_int(value: Any, source: str | PathLike[str]) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(source, f"label id {value!r} is not an integer") from None
    if not number.is_integer() or not 0 <= number <= MAX_LABEL:
        raise InputError(source, f"label id {value!r} is not an integer in 0..{MAX_LABEL}")
    return int(number)


def parse_label_table(obj: Any, source: str | PathLike[str]) -> Scheme:
    """A label table from JSON: ``{"labels": ...}`` or the mapping itself, id -> name
    (``{"1": "lesion"}``) or name -> id (nnU-Net's ``{"background": 0, "lesion": 1}``).

    Id 0 is always "background". nnU-Net region labels (a name mapped to a list) are refused.
    """
    table = obj.get("labels", obj) if isinstance(obj, dict) else obj
    if not isinstance(table, dict) or not table:
        raise InputError(source, "expected a label table: a JSON object of id -> name (or name -> id), or {\"labels\": {...}}")
    scheme: Scheme = {}
    keys_are_ids = all(str(k).strip().isdigit() for k in table)
    for key, value in table.items():
        if keys_are_ids:
            label, name = _as_int(key, source), value
        else:
            if isinstance(value, (list, tuple, dict)):
                raise InputError(source, f"label {key!r} is a region (several ids); only one id per name is supported")
            label, name = _as_int(value, source), key
        if not isinstance(name, str) or not name.strip():
            raise InputError(source, f"label {label} has no name")
        if label in scheme:
            raise InputError(source, f"label id {label} is listed twice")
        scheme[label] = name.strip()
    return _with_background(scheme, source)


def _with_background(scheme: Scheme, source: str | PathLike[str]) -> Scheme:
    names = [n for i, n in scheme.items() if i != 0]
    if len(set(names)) != len(names):
        raise InputError(source, "one name is given to several label ids")
    return {0: BACKGROUND, **{i: n for i, n in sorted(scheme.items()) if i != 0}}


def read_label_table(path: str | PathLike[str]) -> Scheme:
    """A label table file: ``.json`` (see :func:`parse_label_table`) or a BIDS ``.tsv`` with
    ``index`` and ``name`` columns."""
    path = Path(path)
    if path.suffix.lower() == ".tsv":
        import pandas as pd

        try:
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(path, f"cannot read as a TSV label table: {err}") from None
        if not {"index", "name"} <= set(frame.columns):
            raise InputError(path, f"a label table needs 'index' and 'name' columns; has {list(frame.columns)}")
        scheme: Scheme = {}
        for index, name in zip(frame["index"], frame["name"]):
            label = _as_int(index, path)
            if label in scheme:
                raise InputError(path, f"label id {label} is listed twice")
            if not name.strip():
                raise InputError(path, f"label {label} has no name")
            scheme[label] = name.strip()
        return _with_background(scheme, path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read as a JSON label table: {err}") from None
    return parse_label_table(obj, path)


def binary_scheme(name: str) -> Scheme:
    return {0: BACKGROUND, 1: name}


def scheme_json(scheme: Mapping[int, str]) -> dict[str, str]:
    """A scheme with string keys (JSON, the card), in id order."""
    return {str(k): scheme[k] for k in sorted(scheme)}


def scheme_from_json(obj: Mapping[str, str]) -> Scheme:
    return {int(k): str(v) for k, v in obj.items()}


def conflict(scheme: Mapping[int, str], other: Mapping[int, str], where: str) -> str | None:
    """Why ``other`` cannot join ``scheme`` (an id named differently, a name on two ids), or None.

    A placeholder name (``label_<id>``, an id no table names) agrees with any name.
    """
    for label in sorted(set(scheme) & set(other)):
        if scheme[label] != other[label] and open_name(label) not in (scheme[label], other[label]):
            return f"label {label} is {other[label]!r} here but {scheme[label]!r} in {where}"
    names = {n: i for i, n in scheme.items()}
    for label, name in sorted(other.items()):
        if name in names and names[name] != label:
            return f"{name!r} is label {label} here but {names[name]} in {where}"
    return None


@dataclass
class SchemeMerger:
    """Merges the label tables of a source's items in discovery order into one scheme.

    ``add`` returns None when a table agrees with everything seen so far (ids may be added), or
    the reason it disagrees, naming the first table that set the clashing entry.
    """

    scheme: dict[int, str] | None = None
    first: str = ""

    def add(self, table: Mapping[int, str], source: str) -> str | None:
        if self.scheme is None:
            self.scheme, self.first = dict(table), source
            return None
        why = conflict(self.scheme, table, self.first)
        if why is not None:
            return why + "; a prepared dataset has one label scheme"
        _update(self.scheme, table)
        return None


def _update(scheme: dict[int, str], other: Mapping[int, str]) -> None:
    """Add ``other``'s entries; a real name replaces a placeholder, never the reverse."""
    for label, name in other.items():
        if label not in scheme or scheme[label] == open_name(label):
            scheme[label] = name


def merge_schemes(schemes: list[Mapping[str, str]], where: str | PathLike[str]) -> dict[str, str]:
    """The dataset scheme from the series' schemes (JSON form); InputError if two disagree."""
    merged: Scheme = {}
    for scheme in schemes:
        table = scheme_from_json(scheme)
        why = conflict(merged, table, "another series")
        if why is not None:
            raise InputError(where, why)
        _update(merged, table)
    return scheme_json(merged) if merged else {}


def label_values(array: np.ndarray, source: str | PathLike[str] | None) -> np.ndarray:
    """The array as non-negative integers (uint8 when ids fit, else int32), or InputError.

    Float arrays must hold whole numbers (a probability map is refused).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InputError(source, "label map holds NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            raise InputError(source, "label map holds non-integer values (a probability map?); expected integer label ids")
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(source, f"label map has non-numeric dtype {array.dtype}")
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    if lo < 0:
        raise InputError(source, f"label map holds negative values (min {lo})")
    if hi > MAX_LABEL:
        raise InputError(source, f"label map holds ids up to {hi}; at most {MAX_LABEL} are supported")
    return array.astype(np.uint8 if hi <= 255 else np.int32)


def present(array: np.ndarray) -> list[int]:
    """Label ids (> 0) that occur in an integer array, sorted."""
    flat = np.asarray(array).reshape(-1)
    seen = np.zeros(1, dtype=bool)
    # In chunks: bincount works on an intp copy, 8 bytes a voxel for a whole CT volume otherwise.
    for start in range(0, flat.size, _CHUNK):
        counts = np.bincount(flat[start : start + _CHUNK])
        if len(counts) > len(seen):
            seen = np.pad(seen, (0, len(counts) - len(seen)))
        seen[: len(counts)] |= counts > 0
    return [int(i) for i in np.flatnonzero(seen) if i > 0]


def to_label_map(mask: Volume, scheme: Mapping[int, str] | None, binary: bool = False) -> Volume:
    """The mask's voxels as label ids of ``scheme`` (None: any id); ``binary`` maps one non-zero value to 1."""
    import dataclasses

    array = label_values(mask.array, mask.source)
    ids = present(array)
    if binary:
        if len(ids) > 1:
            raise InputError(mask.source, f"a binary mask holds several non-zero values {ids}; expected 0 and one value")
        array = (array != 0).astype(np.uint8)
    elif scheme is not None:
        unknown = sorted(set(ids) - set(scheme))
        if unknown:
            raise InputError(mask.source, f"label ids {unknown} are not in its label table ({scheme_json(scheme)})")
    return dataclasses.replace(mask, array=array)


def lesion_part(mask: Volume, scheme: Mapping[int, str] | None) -> Volume:
    """The part of a label map that marks lesions, for the slices' ``lesion`` flag: the label named
    "lesion" when the scheme has it among other structures (a tissue map), else the whole map."""
    import dataclasses

    ids = [i for i, name in (scheme or {}).items() if i != 0 and name.lower() == "lesion"]
    if len(ids) != 1 or len(scheme or {}) <= 2:
        return mask
    return dataclasses.replace(mask, array=(mask.array == ids[0]).astype(np.uint8))


def check_aligned(mask: Volume, image: Volume) -> None:
    """A label map must have its image's voxel grid: same shape, same affine (RAS mm), one channel."""
    if mask.array.shape[0] != 1:
        raise InputError(mask.source, f"label map has {mask.array.shape[0]} channels; expected one")
    name = image.source.name if image.source is not None else "its image"
    if mask.shape != image.shape:
        raise InputError(mask.source, f"label map shape {list(mask.shape)} differs from {name}'s {list(image.shape)}")
    diff = float(np.max(np.abs(mask.affine - image.affine)))
    if diff > AFFINE_TOLERANCE_MM:
        raise InputError(mask.source, f"label map affine differs from {name}'s (by up to {diff:.3g} mm): not the same voxel grid")


def storage_dtype(scheme: Mapping[int, str] | None, array: np.ndarray) -> np.dtype:
    """uint8 when every id (of the scheme, or found) fits, else uint16."""
    top = max(scheme) if scheme else (int(array.max()) if array.size else 0)
    return np.dtype(np.uint8 if top <= 255 else np.uint16)


def label_boxes(array: np.ndarray) -> dict[int, list[int]]:
    """Per label id (> 0) present: its half-open bounding box ``[lo..., hi...]`` in index order."""
    array = np.asarray(array)
    fg = array != 0
    if not fg.any():
        return {}
    # Every label lies inside the foreground box: look only there.
    outer = _box(fg)
    ndim = array.ndim
    region = array[tuple(slice(outer[a], outer[a + ndim]) for a in range(ndim))]
    boxes = {}
    for label in present(region):
        box = _box(region == label)
        boxes[label] = [box[a] + outer[a % ndim] for a in range(2 * ndim)]
    return boxes


def _box(hits: np.ndarray) -> list[int]:
    lo, hi = [], []
    for axis in range(hits.ndim):
        along = np.flatnonzero(hits.any(axis=tuple(a for a in range(hits.ndim) if a != axis)))
        lo.append(int(along[0]))
        hi.append(int(along[-1]) + 1)
    return lo + hi


def mask_columns(array: np.ndarray | None) -> dict[str, Any]:
    """``labels_present`` and ``boxes`` (JSON ``{"<id>": [lo..., hi...]}``) of a stored mask; None without one."""
    if array is None:
        return {"labels_present": None, "boxes": None}
    boxes = label_boxes(array)
    return {"labels_present": sorted(boxes), "boxes": boxes_json(boxes)}


def boxes_json(boxes: Mapping[int, list[int]]) -> str:
    return json.dumps({str(k): [int(v) for v in boxes[k]] for k in sorted(boxes)}, separators=(",", ":"))
