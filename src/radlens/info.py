"""``radlens info PATH``: what a scan or a prepared dataset holds, readably or as JSON.

For a scan (a volume file or a DICOM folder): shape, spacing, orientation codes, acquisition
plane, modality and the PHI-filtered metadata. For a prepared dataset folder: its card and counts.
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any

from radlens.errors import InputError


def scan_info(path: str | Path) -> dict[str, Any]:
    """Geometry and PHI-filtered metadata of one scan (file or DICOM folder)."""
    from radlens.io.reader import read_volume
    from radlens.prepare.slicing import acquisition_plane

    volume = read_volume(path)
    meta = volume.metadata
    return {
        "path": str(path),
        "kind": "scan",
        "shape": list(volume.shape),
        "channels": int(volume.array.shape[0]),
        "spacing": [round(s, 4) for s in volume.spacing],
        "orientation": volume.orientation,
        "plane": acquisition_plane(volume.slice_normal) if volume.slice_normal is not None else None,
        "modality": meta.Modality,
        "hu": volume.hu,
        "value_range": [float(volume.array.min()), float(volume.array.max())],
        "metadata": {k: v for k, v in meta.to_dict().items() if v is not None},
        "extra": dict(meta.extra),
    }


def dataset_info(path: str | Path) -> dict[str, Any]:
    """The card of a prepared dataset folder, its counts (with the number of protocol labels) and its failures."""
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(path)
    card = dict(ds.card)
    if isinstance(card.get("counts"), dict) and "label" in ds.series.columns:
        labels = ds.series["label"].dropna()
        counts = dict(card["counts"])
        counts["protocol_labels"] = int(labels[labels >= 0].nunique())
        card["counts"] = counts
    return {"path": str(path), "kind": "prepared dataset", **card, "failure_reasons": ds.failures["reason"].value_counts().head(10).to_dict()}


def _readable(info: dict[str, Any]) -> dict[str, Any]:
    """The text view: the protocol-label count next to the series count (a label per series is a warning sign:
    the labels then group nothing)."""
    counts = info.get("counts")
    if not isinstance(counts, dict) or "protocol_labels" not in counts or "series" not in counts:
        return info
    counts = dict(counts)
    labels, series = counts.pop("protocol_labels"), counts["series"]
    per_label = f", {series / labels:.1f} series per label" if labels else ""
    counts["series"] = f"{series} ({labels} protocol labels{per_label})"
    return {**info, "counts": counts}


def describe(path: str | Path) -> dict[str, Any]:
    """:func:`dataset_info` for a prepared dataset folder, :func:`scan_info` otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir() and (path / "dataset.json").is_file():
        return dataset_info(path)
    return scan_info(path)


def _lines(info: dict[str, Any], indent: str = "") -> list[str]:
    out = []
    for key, value in info.items():
        if key == "config":
            continue
        if isinstance(value, dict) and value:
            out.append(f"{indent}{key}:")
            out.extend(_lines(value, indent + "  "))
        else:
            out.append(f"{indent}{key}: {value}")
    return out


def info(path: Path, json: bool = False) -> int:
    """Show a scan's geometry and metadata, or a prepared dataset's card and counts.

    Args:
        path: a volume file, a DICOM folder, or a prepared dataset folder.
        json: print JSON instead of text (``--json true``).
    """
    data = describe(path)
    print(jsonlib.dumps(data, indent=2, default=str) if json else "\n".join(_lines(_readable(data))))
    return 0
