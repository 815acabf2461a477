"""The attention figure of ``radlens train mil``: the top-attended slices of a few bags.

When the bags point to the 2D prepared dataset they were extracted from (the feature files'
``prepared`` attribute, as ``radlens extract bags`` writes it, or a ``dataset`` column of
``bags.csv``; relative to ``bags.csv``'s folder when not absolute) and each top slice can be found
there (the file's per-row ``slice_id``, else ``{series_id}:{slice_index}`` for a one-series bag),
the slices are drawn with their lesion mask outlined (:func:`radlens.common.montage.save_montage`;
a slice without a mask but with lesion ``boxes`` gets the boxes outlined).
Otherwise the figure plots each bag's attention against the slice index, top slices marked.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.prepared import PreparedDataset

DATASET_ATTRS = ("prepared", "dataset", "prepared_dataset")


def find_prepared(table: pd.DataFrame, attrs: dict[str, Any], base: Path) -> PreparedDataset | None:
    """The 2D prepared dataset the bags came from, when ``bags.csv`` or the feature files name one that opens."""
    from radlens.io.prepared import PreparedDataset

    named = [v for v in table.get("dataset", []) if isinstance(v, str) and v.strip()][:1]
    named += [attrs[k] for k in DATASET_ATTRS if isinstance(attrs.get(k), str) and attrs[k].strip()]
    for name in named:
        path = Path(name) if Path(name).is_absolute() else base / name
        try:
            prepared = PreparedDataset(path)
            if prepared.dims == 2:
                return prepared
        except (InputError, KeyError, ValueError):
            continue
    return None


def top_slices(attention: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per bag (``path``): its ``k`` rows of highest attention (mean over the folds that scored it)."""
    mean = (attention.groupby(["patient_id", "path", "file", "row", "slice_index"], sort=False)["weight"].mean()
            .reset_index())
    return (mean.sort_values(["path", "weight"], ascending=[True, False], kind="stable")
            .groupby("path", sort=False).head(k))


def _slice_ids(file: str, rows: list[int], series_id: str, slice_index: list[int]) -> list[str] | None:
    """The prepared ``slice_id`` of bag rows: the file's ``slice_id`` dataset, or ``series:index`` for one series."""
    import h5py

    try:
        with h5py.File(file, "r") as f:
            ids = f.get("slice_id")
            if isinstance(ids, h5py.Dataset) and ids.ndim == 1:
                return [v.decode() if isinstance(v, bytes) else str(v) for v in ids[()][rows]]
    except (OSError, IndexError, ValueError):
        return None
    if series_id and ";" not in series_id and series_id != "nan":
        return [f"{series_id}:{i}" for i in slice_index]
    return None


def _lesions(prepared: PreparedDataset, slice_id: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The slice's label map, or its lesion boxes filled in (2D boxes ``(r0, c0, r1, c1)``), or None."""
    from radlens.io.prepared import parse_boxes

    mask = prepared.slice_mask(slice_id)
    if mask is not None:
        return np.asarray(mask)
    table = prepared.slices
    if table is None or "boxes" not in table.columns:
        return None
    cell = table["boxes"][table["slice_id"] == slice_id]
    boxes = parse_boxes(cell.iat[0]) if len(cell) else {}
    if not boxes:
        return None
    drawn = np.zeros(shape, dtype=np.uint8)
    for r0, c0, r1, c1 in (b[:4] for b in boxes.values()):
        drawn[r0:r1, c0:c1] = 1
    return drawn


def _montage(top: pd.DataFrame, bags: pd.DataFrame, prepared: PreparedDataset, path: Path, columns: int) -> Path | None:
    """The top slices with their masks, or None when a slice cannot be found in ``prepared``."""
    from radlens.common.montage import save_montage

    series = dict(zip(bags["path"], bags["series_id"].astype(str))) if "series_id" in bags.columns else {}
    named = dict(zip(bags["path"], bags["_labels"])) if "_labels" in bags.columns else {}
    images, masks, titles = [], [], []
    for bag, rows in top.groupby("path", sort=False):
        ids = _slice_ids(rows["file"].iat[0], rows["row"].tolist(), series.get(bag, ""), rows["slice_index"].tolist())
        if ids is None:
            return None
        for row, slice_id in zip(rows.itertuples(), ids):
            try:
                images.append(np.asarray(prepared.slice(slice_id)))
                masks.append(_lesions(prepared, slice_id, images[-1].shape))
            except (KeyError, IndexError, ValueError, InputError):
                return None
            # Wrapped so that a patient with several findings does not run into the next panel's title.
            head = textwrap.fill(f"{row.patient_id} {named.get(bag, '')}", width=38)
            titles.append(f"{head}\nslice {int(row.slice_index)}, attention {row.weight:.3f}")
    return save_montage(images, titles, path, masks, columns=columns) if images else None


def save_attention_figure(attention: pd.DataFrame, bags: pd.DataFrame, path: Path, prepared: PreparedDataset | None,
                          max_bags: int = 6, top: int = 3) -> Path:
    """``path``: top-attended slices of up to ``max_bags`` bags (positive ones first) with their lesion
    masks, or attention against slice index when the slices cannot be shown.

    ``attention``: rows ``patient_id, path, file, row, slice_index, weight`` (several folds averaged);
    ``bags``: ``path`` (+ ``series_id``, ``_positive``, ``_labels`` for titles) in the order to choose from.
    """
    chosen = _choose(attention, bags, max_bags)
    attention = attention[attention["path"].isin(chosen)]
    if prepared is not None:
        best = top_slices(attention, top)
        best = best.iloc[np.argsort(best["path"].map({p: i for i, p in enumerate(chosen)}).to_numpy(), kind="stable")]
        made = _montage(best, bags, prepared, path, top)
        if made is not None:
            return made
    return _plot(attention, bags, chosen, path, top)


def _choose(attention: pd.DataFrame, bags: pd.DataFrame, n: int) -> list[str]:
    """Up to ``n`` bag paths that have attention: bags with a positive label first, in table order."""
    rows = bags[bags["path"].isin(set(attention["path"]))]
    positive = rows["_positive"].to_numpy(dtype=bool) if "_positive" in rows.columns else np.zeros(len(rows), dtype=bool)
    return (list(rows["path"][positive]) + list(rows["path"][~positive]))[:n]


def _plot(attention: pd.DataFrame, bags: pd.DataFrame, chosen: list[str], path: Path, top: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radlens.common.atomic import atomic_path

    mean = attention.groupby(["path", "patient_id", "row", "slice_index"], sort=False)["weight"].mean().reset_index()
    named = dict(zip(bags["path"], bags["_labels"])) if "_labels" in bags.columns else {}
    fig, axes = plt.subplots(len(chosen), 1, figsize=(6, 1.8 * len(chosen)), squeeze=False)
    for ax, bag in zip(axes[:, 0], chosen):
        rows = mean[mean["path"] == bag].sort_values(["slice_index", "row"])
        ax.plot(rows["slice_index"], rows["weight"], marker=".", lw=1)
        best = rows.nlargest(top, "weight")
        ax.scatter(best["slice_index"], best["weight"], color="red", zorder=3, s=18)
        ax.set_title(f"{rows['patient_id'].iat[0]} {named.get(bag, '')} ({Path(bag).name}): top {top} slices in red",
                     fontsize=8)
        ax.set_ylabel("attention", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[-1, 0].set_xlabel("slice index")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
