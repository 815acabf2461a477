"""Export a 2D prepared dataset in MR-CLIP's layout: 8-bit PNG slices, ``filepath,text,label`` CSVs, bin intervals.

Writes ``OUT/images/<patient>/<series>/<row>.png`` (the stored slice, mapped from the dataset's
value range to 0..255), one CSV per split (``train.csv``, ``validation.csv``, ``test.csv``;
``filepath`` relative to OUT, as :mod:`radlens.prepare.importers.csv` reads it back) and, when
the dataset has TE/TR bins, ``bin_intervals_et_<te>_rt_<tr>.json`` in MR-CLIP's shape.

The CSVs hold MR-CLIP's ``filepath,text,label`` and a ``patient_id`` column: the dataset's own
patient id (a pseudonym for DICOM sources, never a DICOM tag). MR-CLIP reads only the columns it
is told to; ``radlens prepare csv`` takes the patient from it, so one subject's series stay in one
split after a round trip. The output folder is written whole or not at all and must lie apart
from the prepared dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from radlens.common.atomic import check_apart, staged_output, write_bytes_atomic, write_csv_atomic
from radlens.errors import InputError
from radlens.prepare.dataset import safe_name


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def export_mrclip(prepared: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the MR-CLIP layout of the 2D prepared dataset ``prepared`` into ``out``; returns ``out``.

    ConfigError when ``out`` is, lies in, or holds ``prepared`` (nothing is written then).
    """
    from tqdm import tqdm

    from radlens.io.prepared import PreparedDataset
    from radlens.prepare.intensity import to_uint8

    ds = PreparedDataset(prepared)
    check_apart(ds.path, out, what="prepared dataset")
    if ds.slices is None:
        raise InputError(ds.path, "MR-CLIP export needs a 2D dataset (prepare with dims=2)")
    lo, hi = ds.value_range
    slices = ds.slices
    patients = ds.series.set_index("series_id")["patient_id"].astype(str)
    paths = []
    with staged_output(out, overwrite, command="export mrclip") as tmp:
        for i in tqdm(range(len(slices)), desc="export mrclip", unit="slice"):
            sid = slices["series_id"].iat[i]
            rel = f"images/{safe_name(patients[sid])}/{safe_name(sid)}/{int(slices['row'].iat[i]):04d}.png"
            image = to_uint8((np.asarray(ds.slice(i), dtype=np.float32) - lo) / (hi - lo))
            write_bytes_atomic(tmp / rel, _png_bytes(image))
            paths.append(rel)
        table = slices.assign(filepath=paths, patient_id=slices["series_id"].map(patients))
        for split, part in table.groupby("split"):
            write_csv_atomic(tmp / f"{split}.csv", part[["filepath", "text", "label", "patient_id"]])
        intervals = ds.path / "extras" / "bin_intervals.json"
        if intervals.is_file():
            binning = ds.card["config"]["binning"]
            shutil.copyfile(intervals, tmp / f"bin_intervals_et_{binning['te_bins']}_rt_{binning['tr_bins']}.json")
    return Path(out)


def mrclip(prepared: Path, out: Path, overwrite: bool = False) -> int:
    """Export a 2D prepared dataset as MR-CLIP PNG slices + filepath,text,label,patient_id CSVs.

    Args:
        prepared: a prepared dataset folder (dims 2); never written to.
        out: the folder to write, apart from ``prepared``.
        overwrite: write into a non-empty folder radlens did not write (replacing same-named files, deleting nothing).
    """
    print(f"exported -> {export_mrclip(prepared, out, overwrite)}")
    return 0
