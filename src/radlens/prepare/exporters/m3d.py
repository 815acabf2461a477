"""Export a 3D prepared dataset in the M3D-Cap layout: ``dataset.json`` + ``<id>/img.npy`` + ``text.txt``.

``img.npy`` is ``(1, D, H, W)`` float32 in [0, 1]: the stored ``(1, X, Y, Z)`` array
transposed with ``(0, 3, 2, 1)`` (D = Z, H = Y, W = X, the ``SimpleITK.GetArrayFromImage``
order M3D uses) and mapped from the dataset's value range to [0, 1]. Samples are written as
``<patient>/<series>/`` and each ``dataset.json`` entry carries the dataset's ``patient_id`` (the
id radlens already uses in its tables, a pseudonym for DICOM sources, never a DICOM tag; M3D's
own loader reads only ``image`` and ``text``), so :mod:`radlens.prepare.importers.m3d` recovers
the patients; ``dataset.json`` keeps the splits. The output folder is written whole or not at all
(:func:`radlens.common.atomic.staged_output`) and must lie apart from the prepared dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radlens.common.atomic import check_apart, save_array_atomic, staged_output, write_bytes_atomic, write_json_atomic
from radlens.errors import InputError
from radlens.prepare.dataset import safe_name

X_Y_Z_TO_D_H_W = (0, 3, 2, 1)


def export_m3d(prepared: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the M3D layout of the 3D prepared dataset ``prepared`` into ``out``; returns ``out``.

    ConfigError when ``out`` is, lies in, or holds ``prepared`` (nothing is written then).
    """
    from tqdm import tqdm

    from radlens.io.prepared import SPLITS, PreparedDataset

    ds = PreparedDataset(prepared)
    check_apart(ds.path, out, what="prepared dataset")
    if ds.dims != 3:
        raise InputError(ds.path, "M3D export needs a 3D dataset (prepare with dims=3)")
    lo, hi = ds.value_range
    listing: dict[str, list[dict[str, str]]] = {split: [] for split in SPLITS}
    series = ds.series
    with staged_output(out, overwrite, command="export m3d") as tmp:
        for i in tqdm(range(len(series)), desc="export m3d", unit="series"):
            row = series.iloc[i]
            folder = f"{safe_name(row['patient_id'])}/{safe_name(row['series_id'])}"
            img = np.clip((np.asarray(ds.array(row["series_id"]), dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
            save_array_atomic(tmp / folder / "img.npy", img.transpose(X_Y_Z_TO_D_H_W))
            write_bytes_atomic(tmp / folder / "text.txt", str(row["text"]).encode("utf-8"))
            listing[row["split"]].append(
                {"image": f"{folder}/img.npy", "text": f"{folder}/text.txt", "patient_id": str(row["patient_id"])}
            )
        write_json_atomic(tmp / "dataset.json", listing)
    return Path(out)


def m3d(prepared: Path, out: Path, overwrite: bool = False) -> int:
    """Export a 3D prepared dataset as M3D-Cap folders (dataset.json + img.npy + text.txt).

    Args:
        prepared: a prepared dataset folder (dims 3); never written to.
        out: the folder to write, apart from ``prepared``.
        overwrite: write into a non-empty folder radlens did not write (replacing same-named files, deleting nothing).
    """
    print(f"exported -> {export_m3d(prepared, out, overwrite)}")
    return 0
