"""``radlens extract bags``: one HDF5 bag of slice features per study (or series) of a 2D prepared dataset.

CLEAR's workflow is slice encoder -> per-patient feature files -> attention-MIL; this writes the
middle step for any image model radlens has (:mod:`radlens.evaluate.slice_encoder`): a CLIP bundle's
image tower (pooled features by default, or the projected embedding), a MoCo/LeCL bundle's
``encode``, or a plain image encoder, from a bundle or freshly initialised from a registry name
with a recorded seed (the random-init baseline).

A bag file ``OUT/<id>.h5`` holds, one row per slice in slice order (the study's series one after
the other, by ``series_id``): ``feats`` ``(n, D)`` float32, ``slice_index`` ``(n,)`` int64 (along
the slicing axis), ``z_mm`` ``(n,)`` float32, ``slice_id`` and ``series_id`` ``(n,)`` strings, and,
when CT ``windows`` are given, ``window`` (the HU window of each row: ``(n, 2)``, or ``(n, C, 2)``
when the windows are the encoder's input channels). Its attributes: ``format``, ``encoder`` (bundle
folder, registry name or hub id), ``encoder_kind``, ``features``, ``encoder_sha256`` (sha256 over the
bundle's files; over the config and state dict for a registry name or hub id), ``encoder_hash`` (the
sha256 of that hash together with ``features`` and ``windows``: what decides the numbers, so files of
different ``encoder_hash`` are never mixed or reused), ``seed`` (random init only), ``preprocessing``
(JSON: the bundle's, the dataset card's, the windows), ``radlens_version``, ``patient_id``,
``study_id``, ``series_id`` (a study's series joined by ``;``), ``split``, ``prepared``, ``z_mm_note``.

``z_mm`` is ``slice_index`` times the series' voxel spacing along the slicing axis (``spacing`` of
``series.parquet``: the resampled volume the slices were cut from), i.e. millimetres from that
volume's first voxel along R, A or S; NaN where the tables give no spacing (``z_mm_note`` says so).

Windows: the prepared arrays hold CT already windowed (the card's ``ct_window``); windows inside
that range are cut from them as :mod:`radlens.data.windows` does for MoCo training (each to [0, 1]).
With an encoder of one input channel each window is a row of its own (``window_mode`` ``samples``:
slice-major, then window); with ``in_channels == len(windows)`` they are the channels of one row
(``channels``). ``windows=None`` takes the bundle preprocessing's ``windows`` when it names some,
else the stored slices are used as they are.

3D datasets are refused: prepare volumes as slices (``radlens prepare --dims 2``), which records
the slice positions and fits each slice to the encoder's input, instead of guessing it here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.common.sharding import Shard
from radlens.errors import ConfigError, InputError
from radlens.evaluate.slice_encoder import Features, SliceEncoder, load_slice_encoder

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.io.prepared import PreparedDataset

FORMAT, FORMAT_VERSION = "radlens-bags", 1
INDEX, FAILURES, RUN = "bags.csv", "failures.csv", "run.json"


@dataclass
class _Bag:
    """One output file: which slices, in order, and the table row it gets in ``bags.csv``."""

    name: str
    series: list[str]
    rows: list[np.ndarray]  # per series: array rows, in slice order
    slice_index: np.ndarray
    z_mm: np.ndarray
    slice_id: list[str]
    info: dict[str, Any]

    @property
    def n_slices(self) -> int:
        return len(self.slice_id)


class _SliceBatches:
    """Map-style dataset: item ``i`` = batch ``i`` of slices, ``(B, C, H, W)`` float32 (memory-mapped reads).

    Holds the prepared folder's path, not its memory maps, so a worker process opens its own.
    """

    def __init__(self, prepared: Path, plan: list[tuple[np.ndarray, np.ndarray]], windowing: _Windowing) -> None:
        self.prepared, self.plan, self.windowing = prepared, plan, windowing
        self._ds: PreparedDataset | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> np.ndarray:
        from radlens.io.prepared import PreparedDataset

        if self._ds is None:
            self._ds = PreparedDataset(self.prepared)
        series_ids, rows = self.plan[i]
        blocks = []
        for sid in dict.fromkeys(series_ids):  # runs of one series, in order
            sel = rows[series_ids == sid]
            blocks.append(np.asarray(self._ds.array(sid)[sel], dtype=np.float32))
        return self.windowing(np.concatenate(blocks))


@dataclass
class _Windowing:
    """Slices ``(B, H, W)`` -> model input ``(B', C, H, W)``: as stored, or re-windowed to CT ``windows``
    (:mod:`radlens.data.windows`, the transform MoCo trains with) as channels or as one row per window."""

    windows: list[tuple[float, float]]
    coefficients: np.ndarray | None
    mode: Literal["channels", "samples"]

    @property
    def per_slice(self) -> int:
        return len(self.windows) if self.mode == "samples" and self.windows else 1

    def __call__(self, slices: np.ndarray) -> np.ndarray:
        from radlens.data.windows import apply_windows

        if self.coefficients is None:
            return slices[:, None]
        stack = np.moveaxis(apply_windows(slices, self.coefficients), 0, 1)  # (B, W, H, W)
        return stack if self.mode == "channels" else stack.reshape(-1, 1, *slices.shape[1:])

    def rows(self, n: int) -> np.ndarray | None:
        """The ``window`` dataset of a bag of ``n`` slices (None without windows)."""
        if not self.windows:
            return None
        w = np.asarray(self.windows, dtype=np.float32)
        return np.broadcast_to(w, (n, *w.shape)).copy() if self.mode == "channels" else np.tile(w, (n, 1))


def _windowing(ds: PreparedDataset, enc: SliceEncoder, windows: Sequence[Sequence[float]] | None) -> _Windowing:
    """Windows given, else the bundle's; as channels when the encoder takes one channel per window."""
    from radlens.data.windows import window_coefficients

    if windows is None:
        windows = enc.preprocessing.get("windows") or None
    channels = enc.in_channels or 1
    if not windows:
        if channels != 1:
            raise InputError(enc.name, f"the encoder takes {channels} input channels: give that many CT windows")
        return _Windowing([], None, "samples")
    card_path = ds.path / "dataset.json"
    try:
        coefficients = window_coefficients(ds.card, windows, card_path)
    except ConfigError as err:
        raise InputError(card_path, str(err).removeprefix(f"{card_path}: ")) from err
    if channels not in (1, len(windows)):
        raise InputError(enc.name, f"the encoder takes {channels} input channels but {len(windows)} windows were given "
                                   "(one channel: a row per window; else one window per channel)")
    mode: Literal["channels", "samples"] = "channels" if channels == len(windows) > 1 else "samples"
    return _Windowing([(float(lo), float(hi)) for lo, hi in windows], coefficients, mode)


def _check_geometry(ds: PreparedDataset, enc: SliceEncoder, windowing: _Windowing) -> None:
    """The card's slice shape must be the encoder's input; a trained bundle's preprocessing must match the card."""
    from types import SimpleNamespace

    from radlens.models.compat import check_compatible

    if enc.input_shape is None:
        return  # an encoder that does not say: its own shape check speaks on the first batch
    channels = len(windowing.windows) if windowing.mode == "channels" else 1
    check_compatible(SimpleNamespace(input_shape=(channels, *enc.input_shape), preprocessing=enc.preprocessing), ds)


def _file_name(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key)
    return ("_" + name if name.startswith(".") or not name else name) + ".h5"


def _z_mm(slices: pd.DataFrame, spacing: Any) -> tuple[np.ndarray, str]:
    from radlens.prepare.slicing import plane_axis

    index = slices["slice_index"].to_numpy(dtype=np.float64)
    planes = slices["plane"].astype(str).tolist() if "plane" in slices.columns else []
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1) if spacing is not None and not np.isscalar(spacing) else None
    if sp is None or sp.shape != (3,) or not planes or any(p not in ("sagittal", "coronal", "axial") for p in planes):
        return np.full(len(index), np.nan, np.float32), "NaN: the prepared tables give no spacing or slice plane for this series"
    axes = np.array([plane_axis(p) for p in planes])
    return (index * sp[axes]).astype(np.float32), ("slice_index x spacing along the slicing axis (mm from the first "
                                                   "voxel of the resampled volume, along R/A/S)")


def _label_columns(ds: PreparedDataset) -> list[str]:
    names = [str(f) for f in ds.card.get("findings") or []] + ["label", "fold"]
    return [c for c in dict.fromkeys(names) if c in ds.series.columns]


def _series_slices(ds: PreparedDataset, rec: dict[str, Any], table: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, str]:
    """A series' array rows in slice order, its z_mm and how z_mm was found; InputError naming the file
    when the series cannot be used."""
    sid = str(rec["series_id"])
    if table is None or table.empty:
        raise InputError(ds.path / "slices.parquet", "the series has no slices")
    try:
        array = ds.array(sid)
    except InputError:
        raise
    except (OSError, ValueError) as err:
        raise InputError(ds.path / str(rec["array_path"]), f"cannot read the array ({err})") from err
    rows = table["row"].to_numpy(dtype=np.int64)
    if array.ndim != 3 or rows.max() >= array.shape[0]:
        raise InputError(ds.path / str(rec["array_path"]),
                         f"array of shape {array.shape} does not hold the rows up to {int(rows.max())} of slices.parquet")
    return (rows, *_z_mm(table, rec.get("spacing")))


def _plan_bags(ds: PreparedDataset, per: str, split: str | None) -> tuple[list[_Bag], list[dict[str, str]]]:
    """The bags to write (series grouped per study or not, by id) and the series that cannot be used."""
    series, slices = ds.series, ds.slices
    assert slices is not None
    if split is not None:
        series = series[series["split"] == split]
    if per == "study" and ("study_id" not in series.columns or series["study_id"].isna().any()):
        raise InputError(ds.path / "series.parquet", "no study_id for every series: use per='series'")
    by_series = {sid: t.sort_values("row") for sid, t in slices.groupby("series_id", sort=False)}
    key, labels = ("study_id" if per == "study" else "series_id"), _label_columns(ds)
    bags, names, failures = [], {}, []
    for bag_id, group in series.groupby(key, sort=True):
        kept, rows, z, notes = [], [], [], set()
        for rec in group.sort_values("series_id").to_dict("records"):
            try:
                r, zz, note = _series_slices(ds, rec, by_series.get(str(rec["series_id"])))
            except InputError as err:
                failures.append({"path": err.path, "series_id": str(rec["series_id"]), "reason": err.reason})
                continue
            kept.append(str(rec["series_id"]))
            rows.append(r)
            z.append(zz)
            notes.add(note)
        if not kept:
            continue
        name = _file_name(str(bag_id))
        if name in names:
            raise InputError(ds.path / "series.parquet", f"{key}s {names[name]!r} and {bag_id!r} map to one file name {name}")
        names[name] = bag_id
        tables = [by_series[sid] for sid in kept]
        first = group[group["series_id"].isin(kept)]
        info = {"patient_id": str(first["patient_id"].iat[0]), "study_id": str(first.get("study_id", first["series_id"]).iat[0]),
                "series_id": ";".join(kept), "split": str(first["split"].iat[0]) if "split" in first.columns else ""}
        for col in labels:  # findings: positive if any series is; label and fold: the common value, else -1
            values = first[col]
            info[col] = (values.iat[0] if values.nunique(dropna=False) == 1 else -1) if col in ("label", "fold") else values.max()
        info["z_mm_note"] = "; ".join(sorted(notes))
        bags.append(_Bag(name, kept, rows, np.concatenate([t["slice_index"].to_numpy(dtype=np.int64) for t in tables]),
                         np.concatenate(z), [str(i) for t in tables for i in t["slice_id"]], info))
    return bags, failures


def _done(path: Path, bag: _Bag, encoder_hash: str, per_slice: int) -> bool:
    """Whether ``path`` is this bag already extracted by this encoder. An existing file that is not a
    radlens bag (or not readable) is never overwritten: InputError naming it."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError(path, f"exists and is not a {FORMAT} file; move it away or choose another out folder")
            if f.attrs.get("encoder_hash") != encoder_hash:
                return False
            expected = np.repeat(bag.slice_index, per_slice)
            si = f.get("slice_index")
            return si is not None and si.shape == expected.shape and bool((si[()] == expected).all()) and \
                [s.decode() if isinstance(s, bytes) else s for s in f["slice_id"][()]] == list(np.repeat(bag.slice_id, per_slice))
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as err:
        raise InputError(path, f"exists and is not a readable {FORMAT} file ({err}); move it away") from err


def _write_bag(path: Path, bag: _Bag, feats: np.ndarray, windowing: _Windowing, attrs: dict[str, Any]) -> None:
    """The bag file, atomically (a temporary name beside it, then a rename)."""
    import h5py

    from radlens.common.atomic import atomic_path

    k = windowing.per_slice
    strings = h5py.string_dtype()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("feats", data=feats.astype(np.float32, copy=False))
        f.create_dataset("slice_index", data=np.repeat(bag.slice_index, k))
        f.create_dataset("z_mm", data=np.repeat(bag.z_mm, k))
        f.create_dataset("slice_id", data=np.repeat(np.asarray(bag.slice_id, dtype=object), k), dtype=strings)
        series_of_row = [sid for sid, r in zip(bag.series, bag.rows) for _ in range(len(r))]
        f.create_dataset("series_id", data=np.repeat(np.asarray(series_of_row, dtype=object), k), dtype=strings)
        window = windowing.rows(bag.n_slices)
        if window is not None:
            f.create_dataset("window", data=window)
        for key, value in {**attrs, **{c: bag.info[c] for c in ("patient_id", "study_id", "series_id", "split", "z_mm_note")}}.items():
            f.attrs[key] = value


def extract_bags(
    bundle: str,
    prepared: str,
    out: str,
    per: Literal["study", "series"] = "series",
    split: Literal["train", "validation", "test"] | None = None,
    windows: list[tuple[float, float]] | None = None,
    features: Features = "pooled",
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int = 0,
    seed: int = 0,
    strict: bool = False,
    shard: str | None = None,
) -> int:
    """Write one HDF5 bag of slice features per study (or series) of a 2D prepared dataset, and OUT/bags.csv.

    Each OUT/<id>.h5 holds feats (n slices, D) float32 in slice order, slice_index, z_mm, slice_id,
    series_id (and window with CT windows), with attributes naming the encoder, its hash, the
    preprocessing and the radlens version. A rerun skips bags already written by the same encoder
    (encoder_hash) and redoes the others; files it did not write are never touched. bags.csv
    (path, patient_id, study_id, series_id, n, split, the series' label columns) is what
    `radlens train mil` and BagDataset read. Series that cannot be read are listed in OUT/failures.csv.

    Args:
        bundle: model bundle or run folder (CLIP, moco, image encoder), or a registry name / JSON
            config of an image encoder (random init, seeded: the baseline), or a Hugging Face Hub id.
        prepared: 2D prepared dataset folder (3D: prepare with --dims 2).
        out: output folder (created; existing bags of the same encoder are kept).
        per: one bag per study or per series.
        split: only series of this split (default: all).
        windows: CT windows [[lo, hi], ...] in HU, inside the dataset's stored window: a row per
            window for a one-channel encoder, or the encoder's input channels (default: the
            bundle's windows, else the stored slices).
        features: CLIP bundles: the image tower's pooled features, or the projected embedding.
        batch_size: images per encoder pass (slices of many series are batched together).
        device: auto, cpu, cuda, cuda:1, ...
        num_workers: processes reading slices (0: in this process).
        seed: weights of a freshly initialised registry model (recorded in the files).
        strict: stop at the first series that cannot be read.
        shard: i/n (i from 0): write only the bags of shard i of n (by a hash of the bag's id), and
            no bags.csv; run again without --shard once all n are done: it finds every bag
            extracted and writes bags.csv, failures.csv and run.json.
    """
    from tqdm.auto import tqdm

    import radlens
    from radlens.common.atomic import write_csv_atomic, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.data.modules import preprocessing_from_card
    from radlens.evaluate.embed import _device
    from radlens.io.prepared import SPLITS, PreparedDataset

    if per not in ("study", "series"):
        raise ConfigError(f"per must be 'study' or 'series', got {per!r}")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
    part = Shard.parse(shard)
    ds = PreparedDataset(prepared)
    if ds.dims != 2 or ds.slices is None:
        raise InputError(ds.path, "a 3D prepared dataset (no slices.parquet): bags are of 2D slices; "
                                  "prepare the volumes with --dims 2")
    enc = load_slice_encoder(bundle, features, seed)
    windowing = _windowing(ds, enc, windows)
    _check_geometry(ds, enc, windowing)
    bags, failures = _plan_bags(ds, per, split)
    if failures and strict:
        raise InputError(failures[0]["path"], failures[0]["reason"])
    if not bags:
        first = f" (first: {failures[0]['path']}: {failures[0]['reason']})" if failures else ""
        raise InputError(ds.path, f"no readable slices{f' in split {split!r}' if split else ''} to extract{first}")
    if part is not None:
        bags = [bag for bag in bags if part.owns(bag.name)]
    preprocessing = {"bundle": enc.preprocessing, "card": preprocessing_from_card(ds.card),
                     "windows": [list(w) for w in windowing.windows], "window_mode": windowing.mode if windowing.windows else None}
    encoder_hash = hashlib.sha256(json.dumps({"encoder": enc.sha256, "features": enc.features,
                                              "windows": preprocessing["windows"], "window_mode": preprocessing["window_mode"]},
                                             sort_keys=True).encode()).hexdigest()
    attrs: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "encoder": enc.name, "encoder_kind": enc.kind,
        "features": enc.features, "encoder_sha256": enc.sha256, "encoder_hash": encoder_hash,
        "preprocessing": json.dumps(preprocessing, sort_keys=True, default=str), "radlens_version": radlens.__version__,
        "prepared": str(ds.path.resolve()),
        **({"seed": enc.seed} if enc.seed is not None else {}),
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    todo = []
    for bag in bags:
        for stale in folder.glob(f".{bag.name}.*.tmp"):  # an interrupted run's own temporary file
            stale.unlink(missing_ok=True)
        if not (folder / bag.name).exists() or not _done(folder / bag.name, bag, encoder_hash, windowing.per_slice):
            todo.append(bag)
    print(f"{len(bags) - len(todo)} of {len(bags)} bags already extracted by this encoder; extracting {len(todo)}")
    if todo:
        _extract(ds, enc, windowing, todo, folder, attrs, batch_size, _device(device), num_workers, tqdm)
    if part is not None:  # the index, failures and run.json are the unsharded run's to write
        print(f"shard {part}: {len(bags)} bags in {folder}; once all {part.count} shards are done, run without "
              "--shard to write bags.csv")
        return 0
    index = _index(folder, bags, windowing.per_slice)
    write_csv_atomic(folder / FAILURES, _frame(failures, ["path", "series_id", "reason"]))
    write_csv_atomic(folder / INDEX, index)
    config = {"prepared": str(prepared), "bundle": str(bundle), "per": per, "split": split, "windows": windows,
              "features": features, "batch_size": batch_size, "encoder_hash": encoder_hash}
    write_json_atomic(folder / RUN, run_info("extract bags", config, enc.seed))
    if failures:
        print(f"{len(failures)} series could not be used: see {folder / FAILURES}")
    unknown = sum("NaN" in b.info["z_mm_note"] for b in bags)
    if unknown:
        print(f"z_mm is NaN in {unknown} bags: the prepared tables give no spacing or slice plane")
    print(f"wrote {folder / INDEX}: {len(bags)} bags, {int(index['n'].sum())} rows of D={_width(folder / bags[0].name)}")
    return 0


def _extract(ds: PreparedDataset, enc: SliceEncoder, windowing: _Windowing, todo: list[_Bag], folder: Path,
             attrs: dict[str, Any], batch_size: int, device: torch.device, num_workers: int, tqdm: Any) -> None:
    """Encode the slices of ``todo`` in batches that run across series and bags; write each bag when complete."""
    import torch
    from torch.utils.data import DataLoader

    k = windowing.per_slice
    step = max(1, batch_size // k)
    series = np.concatenate([np.full(len(r), sid, dtype=object) for bag in todo for sid, r in zip(bag.series, bag.rows)])
    rows = np.concatenate([r for bag in todo for r in bag.rows])
    plan = [(series[i:i + step], rows[i:i + step]) for i in range(0, len(rows), step)]
    loader = DataLoader(_SliceBatches(ds.path, plan, windowing), batch_size=None, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    enc.module.to(device)
    bag_i, pending, filled = 0, [], 0  # the current bag's feature chunks and its rows so far
    with torch.inference_mode(), tqdm(total=len(rows), unit="slice", desc="extracting", leave=False) as bar:
        for batch in loader:
            x = torch.as_tensor(batch).to(device, non_blocking=True)
            out = enc.encode(x)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(x):
                raise InputError(enc.name, f"the encoder gave {getattr(out, 'shape', type(out).__name__)} for {len(x)} "
                                           "images: one feature vector per image, (B, D), is needed")
            feats = out.float().cpu().numpy()
            bar.update(len(x) // k)
            while len(feats):
                bag = todo[bag_i]
                take = min(len(feats), bag.n_slices * k - filled)
                pending.append(feats[:take])
                feats, filled = feats[take:], filled + take
                if filled == bag.n_slices * k:
                    _write_bag(folder / bag.name, bag, np.concatenate(pending), windowing, attrs)
                    bag_i, pending, filled = bag_i + 1, [], 0


def _index(folder: Path, bags: list[_Bag], per_slice: int) -> pd.DataFrame:
    columns = ["path", "patient_id", "study_id", "series_id", "n", "split"]
    rows = [{"path": str((folder / b.name).resolve()), "n": b.n_slices * per_slice,
             **{k: v for k, v in b.info.items() if k != "z_mm_note"}} for b in bags]
    frame = _frame(rows, columns)
    return frame[columns + [c for c in frame.columns if c not in columns]]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def _width(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as f:
        return int(f["feats"].shape[1])
