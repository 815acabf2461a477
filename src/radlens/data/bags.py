"""Bags of precomputed slice embeddings (one HDF5 file per study) for attention-MIL.

A feature file (written by ``radlens extract bags``, ``FORMATS.md``) holds a dataset ``feats``
``(n, D)`` float32 (one row per slice), ``slice_index`` ``(n,)``, ``z_mm`` ``(n,)``, optionally
``window``, and attributes naming the encoder and the radlens version. A :class:`BagDataset`
is one item per row of a table (``path`` to the file, ``patient_id``, ``split``, target
columns); an item is ``{"feats": (n, D) float32, "targets", "index", "slice_index": (n,)}`` and
:func:`collate_bags` pads a batch to its longest bag with a mask (True = a real instance), which
the MIL heads of :mod:`radlens.models.mil` take so that padding never changes a bag's result.

Every file is checked when the dataset is made (exists, is HDF5, has a 2-D ``feats`` with at
least one row, the first file's ``D`` and the first file's ``encoder_hash`` attribute: features of
different encoders are never mixed), so a bad file stops the run before training with an
:class:`~radlens.errors.InputError` naming it. Files are opened per read and closed at once:
no HDF5 handle is ever shared across the fork of a DataLoader worker.

``max_instances`` bounds the instances read per bag, so a study with thousands of slices (and
the padded ``(B, N_max, D)`` batch it would force on every bag in its batch) fits memory: with a
training key ``(index, epoch)`` a random subset of that size is drawn, seeded from
``(seed, epoch, index)`` (the same whichever worker reads it, different every epoch); with an
evaluation key (a plain index) the instances are evenly spaced through the bag, the same every
time. Only the chosen rows are read from the file. Chosen rows keep their order in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.data.augment import item_seed
from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd
    import torch

TargetKind = Literal["auto", "binary", "class"]


class BagDataset:
    """One bag of slice embeddings per table row, with its targets.

    ``table``: a DataFrame (or a CSV/Parquet file) with ``feature_column`` (the feature file,
    relative to ``root`` when given) and ``target_columns``. ``split`` keeps only the rows whose
    ``split`` column equals it. Targets: ``binary`` gives a float32 vector ``(T,)`` of 0/1 (one
    per column, for BCE); ``class`` needs one column of class ids and gives an int64 scalar (for
    cross-entropy); ``auto`` picks ``binary`` when every value is 0/1, else ``class``. No target
    columns gives an empty ``(0,)`` vector (bags to embed or score). ``allow_missing``: empty
    binary targets are kept as NaN (for a loss and metrics that skip them) instead of refused.
    """

    def __init__(
        self,
        table: pd.DataFrame | str | Path,
        feature_column: str = "path",
        target_columns: Sequence[str] = (),
        root: str | Path | None = None,
        split: str | None = None,
        max_instances: int | None = None,
        seed: int = 0,
        target_kind: TargetKind = "auto",
        allow_missing: bool = False,
    ) -> None:
        self.where: str | Path | None = table if isinstance(table, (str, Path)) else None
        table = _read_table(table)
        if max_instances is not None and max_instances < 1:
            raise ConfigError(f"max_instances must be >= 1 (or None for whole bags), got {max_instances}")
        if feature_column not in table.columns:
            raise InputError(self.where, f"no feature column {feature_column!r} (columns: {', '.join(map(str, table.columns))})")
        if split is not None:
            if "split" not in table.columns:
                raise InputError(self.where, "no 'split' column to select a split from")
            table = table[table["split"] == split]
            if len(table) == 0:
                raise InputError(self.where, f"no bags in split {split!r}")
        if len(table) == 0:
            raise InputError(self.where, "the bag table has no rows")
        self.table = table.reset_index(drop=True)
        self.target_columns = list(target_columns)
        self.max_instances, self.seed = max_instances, seed
        base = Path(root) if root is not None else None
        self.paths = [base / p if base is not None else Path(p) for p in self.table[feature_column].astype(str)]
        self.targets, self.target_kind = _targets(self.table, self.target_columns, target_kind, self.where, allow_missing)
        self.sizes, self.dim, self.attrs = _check_files(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def patient_ids(self) -> np.ndarray | None:
        return self.table["patient_id"].astype(str).to_numpy() if "patient_id" in self.table.columns else None

    def instances(self, index: int, epoch: int | None) -> np.ndarray:
        """Which rows of bag ``index`` an item holds (increasing): all, or ``max_instances`` of them."""
        n, m = int(self.sizes[index]), self.max_instances
        if m is None or n <= m:
            return np.arange(n)
        if epoch is None:  # evaluation: evenly spaced, centred (m == 1 takes the middle slice)
            return ((np.arange(m) + 0.5) * n / m).astype(np.int64)
        rng = np.random.default_rng(item_seed(self.seed, epoch, index))
        return np.sort(rng.choice(n, size=m, replace=False))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        import torch

        index, epoch = (int(key), None) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        rows = self.instances(index, epoch)
        feats, slice_index = self._read(index, rows)
        target = self.targets[index]
        return {
            "feats": torch.from_numpy(feats),
            "targets": torch.tensor(target),
            "index": index,
            "slice_index": torch.from_numpy(slice_index),
        }

    def _read(self, index: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chosen rows of ``feats`` (float32) and their ``slice_index`` (the row numbers if absent)."""
        import h5py

        path = self.paths[index]
        whole = len(rows) == self.sizes[index]
        try:
            with h5py.File(path, "r") as f:
                dset = f["feats"]
                if dset.shape != (self.sizes[index], self.dim):
                    raise InputError(path, f"'feats' changed shape since the dataset was opened: {dset.shape}, "
                                           f"expected {(int(self.sizes[index]), self.dim)}")
                feats = dset[()] if whole else dset[rows]
                slice_index = rows
                si = f.get("slice_index")
                if isinstance(si, h5py.Dataset) and si.shape == (self.sizes[index],):
                    slice_index = si[()] if whole else si[rows]
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise InputError(path, f"cannot read features: {err}") from err
        return np.ascontiguousarray(feats, dtype=np.float32), np.asarray(slice_index, dtype=np.int64)


def _read_table(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise InputError(path, "bag table not found")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad table, named
        raise InputError(path, f"cannot read the bag table: {err}") from err


def _targets(table: pd.DataFrame, columns: list[str], kind: TargetKind, where: Any,
             allow_missing: bool = False) -> tuple[np.ndarray, str]:
    """Per-row targets: (N, T) float32 0/1 (``binary``, NaN where missing if ``allow_missing``) or (N,)
    int64 class ids (``class``)."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(where, f"no target column(s) {missing} in the bag table")
    if kind not in ("auto", "binary", "class"):
        raise ConfigError(f"target_kind must be 'auto', 'binary' or 'class', got {kind!r}")
    if not columns:
        return np.zeros((len(table), 0), dtype=np.float32), "binary"
    try:
        values = table[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise InputError(where, f"target columns {columns} are not numeric: {err}") from err
    missing = np.isnan(values)
    if missing.any() and not allow_missing:
        row, col = np.argwhere(missing)[0]
        raise InputError(where, f"target {columns[col]!r} is missing in row {row} (bag {table.iloc[row].to_dict()})")
    binary = bool(np.isin(values[~missing], (0.0, 1.0)).all())
    if kind == "auto":
        kind = "binary" if binary else "class"
    if kind == "binary":
        if not binary:
            bad = ~np.isin(values, (0.0, 1.0)) & ~missing
            raise InputError(where, f"binary target {columns[int(np.argwhere(bad)[0][1])]!r} has values other than 0/1")
        return values.astype(np.float32), "binary"
    if missing.any():
        raise InputError(where, f"class target {columns[0]!r} is missing in row {int(np.argwhere(missing)[0][0])}")
    if len(columns) != 1:
        raise InputError(where, f"class targets take one column of class ids, got {columns} (0/1 columns are binary targets)")
    if (values < 0).any() or (values != np.round(values)).any():
        raise InputError(where, f"class target {columns[0]!r} must hold integer class ids >= 0")
    return values[:, 0].astype(np.int64), "class"


def _check_files(paths: list[Path]) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Bag sizes, the common feature size D and the first file's attributes; InputError naming any bad file."""
    import h5py

    sizes = np.zeros(len(paths), dtype=np.int64)
    dim, first, attrs = -1, None, {}
    for i, path in enumerate(paths):
        if not path.is_file():
            raise InputError(path, "feature file not found")
        try:
            with h5py.File(path, "r") as f:
                if "feats" not in f or not isinstance(f["feats"], h5py.Dataset):
                    raise InputError(path, "no 'feats' dataset in the feature file")
                dset = f["feats"]
                if dset.ndim != 2:
                    raise InputError(path, f"'feats' must be 2-D (n slices, D), got shape {dset.shape}")
                if dset.dtype.kind not in "fiu":
                    raise InputError(path, f"'feats' must be numeric, got dtype {dset.dtype}")
                n, d = (int(s) for s in dset.shape)
                if n == 0:
                    raise InputError(path, "empty bag: 'feats' has no rows")
                if first is None:
                    first, dim, attrs = path, d, {k: _plain(v) for k, v in f.attrs.items()}
                elif d != dim:
                    raise InputError(path, f"feature size D={d} differs from D={dim} of the first file {first}")
                elif _plain(f.attrs.get("encoder_hash")) != attrs.get("encoder_hash"):
                    raise InputError(path, f"encoder_hash {_plain(f.attrs.get('encoder_hash'))!r} differs from "
                                           f"{attrs.get('encoder_hash')!r} of the first file {first}: features of "
                                           "different encoders cannot be mixed")
                sizes[i] = n
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise InputError(path, f"not a readable HDF5 feature file: {err}") from err
    return sizes, dim, attrs


def _plain(value: Any) -> Any:
    """An HDF5 attribute value as JSON-friendly Python (bytes decoded, arrays as lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def collate_bags(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad a batch of bags to its longest: ``feats`` (B, N_max, D) zeros after each bag, ``mask``
    (B, N_max) bool (True = a real instance), ``targets`` (B, T) or (B,), ``index`` (B,),
    ``slice_index`` (B, N_max) with -1 on padding."""
    import torch

    sizes = [int(it["feats"].shape[0]) for it in items]
    n_max, dim = max(sizes), int(items[0]["feats"].shape[1])
    feats = torch.zeros(len(items), n_max, dim, dtype=torch.float32)
    mask = torch.zeros(len(items), n_max, dtype=torch.bool)
    slice_index = torch.full((len(items), n_max), -1, dtype=torch.long)
    for b, (it, n) in enumerate(zip(items, sizes)):
        feats[b, :n] = it["feats"]
        mask[b, :n] = True
        slice_index[b, :n] = it["slice_index"]
    return {
        "feats": feats,
        "mask": mask,
        "targets": torch.stack([it["targets"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "slice_index": slice_index,
    }
