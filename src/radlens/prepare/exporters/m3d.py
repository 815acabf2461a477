"""Export a 3D prepared dataset in the M3D-Cap layout: ``dataset.json`` + ``<id>/img.npy`` + ``text.txt``.

``img.npy`` is ``(1, D, H, W)`` float32 in [0, 1]: the stored ``(1, X, Y, Z)`` array
transposed with ``(0, 3, 2, 1)`` (D = Z, H = Y, W = X, the ``SimpleITK.GetArrayFromImage``
order M3D uses) and mapped from the dataset's value range to [0, 1]. Samples are written as
``<patient>/<series>/``, so :mod:`radlens.prepare.importers.m3d` recovers the patients, and
``dataset.json`` keeps the splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radlens.common.atomic import save_array_atomic, write_bytes_atomic, write_json_atomic
from radlens.errors import InputError
from radlens.prepare.dataset import safe_name

X_Y_Z_TO_D_H_W = (0, 3, 2, 1)


def export_m3d(prepared: str | Path, out: str | Path) -> Path:
    """Write the M3D layout of the 3D prepared dataset ``prepared`` into ``out``; returns ``out``."""
    from tqdm import tqdm

    from radlens.io.prepared import SPLITS, PreparedDataset

    ds = PreparedDataset(prepared)
    if ds.dims != 3:
        raise InputError(ds.path, "M3D export needs a 3D dataset (prepare with dims=3)")
    out = Path(out)
    lo, hi = ds.value_range
    listing: dict[str, list[dict[str, str]]] = {split: [] for split in SPLITS}
    series = ds.series
    for i in tqdm(range(len(series)), desc="export m3d", unit="series"):
        row = series.iloc[i]
        folder = f"{safe_name(row['patient_id'])}/{safe_name(row['series_id'])}"
        img = np.clip((np.asarray(ds.array(row["series_id"]), dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
        save_array_atomic(out / folder / "img.npy", img.transpose(X_Y_Z_TO_D_H_W))
        write_bytes_atomic(out / folder / "text.txt", str(row["text"]).encode("utf-8"))
        listing[row["split"]].append({"image": f"{folder}/img.npy", "text": f"{folder}/text.txt"})
    write_json_atomic(out / "dataset.json", listing)
    return out


def m3d(prepared: Path, out: Path) -> int:
    """Export a 3D prepared dataset as M3D-Cap folders (dataset.json + img.npy + text.txt).

    Args:
        prepared: a prepared dataset folder (dims 3).
        out: the folder to write.
    """
    print(f"exported -> {export_m3d(prepared, out)}")
    return 0
