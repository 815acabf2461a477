"""Reading a prepared dataset folder (``docs/prepared-dataset.md``): card, tables, memory-mapped arrays, masks."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")


class PreparedDataset:
    """A prepared dataset folder opened for reading.

    Arrays are opened with ``np.load(mmap_mode="r")`` once and cached, so ``slice(...)`` is a
    page-cache read of one ``(H, W)`` block rather than a file parse.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        card_path = self.path / "dataset.json"
        if not self.path.is_dir():
            raise InputError(self.path, "not a folder (expected a prepared dataset folder)")
        if not card_path.is_file() or not (self.path / "series.parquet").is_file():
            raise InputError(self.path, "not a prepared dataset (no dataset.json or series.parquet; run `radlens prepare`)")
        try:
            self.card: dict[str, Any] = json.loads(card_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(card_path, f"malformed dataset card: {err}") from None
        if not isinstance(self.card, dict):
            raise InputError(card_path, f"malformed dataset card: expected a JSON object, not {type(self.card).__name__}")
        self._arrays: dict[str, np.ndarray] = {}
        self._series_index: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, dims={self.dims}, series={len(self.series)})"

    @property
    def dims(self) -> int:
        return int(self.card["dims"])

    @cached_property
    def series(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.path / "series.parquet")

    @cached_property
    def slices(self) -> pd.DataFrame | None:
        import pandas as pd

        path = self.path / "slices.parquet"
        return pd.read_parquet(path) if path.is_file() else None

    @cached_property
    def failures(self) -> pd.DataFrame:
        import pandas as pd

        path = self.path / "failures.csv"
        if not path.is_file():
            return pd.DataFrame(columns=["path", "stage", "reason"])
        return pd.read_csv(path, dtype=str, keep_default_na=False)

    @property
    def value_range(self) -> tuple[float, float]:
        """The range the stored values were normalised to (for 8-bit and [0, 1] exports).

        MRI and other sources: [0, 1]. CT: the window mapped by the configured ``ct_output``.
        """
        if self.card.get("modality") != "CT":
            return 0.0, 1.0
        intensity = self.card["config"]["intensity"]
        lo, hi = intensity["ct_window"]
        return {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "hu/1000": (lo / 1000.0, hi / 1000.0)}[intensity["ct_output"]]

    def _open(self, array_path: str) -> np.ndarray:
        arr = self._arrays.get(array_path)
        if arr is None:
            full = self.path / array_path
            if not full.is_file():
                raise InputError(full, "array listed in the tables is missing")
            arr = np.load(full, mmap_mode="r")
            self._arrays[array_path] = arr
        return arr

    def array(self, series_id: str) -> np.ndarray:
        """The series' stored array, memory-mapped read-only (3D: ``(1, X, Y, Z)``; 2D: ``(n, H, W)``)."""
        if self._series_index is None:
            self._series_index = {sid: i for i, sid in enumerate(self.series["series_id"])}
        if series_id not in self._series_index:
            raise KeyError(f"no series {series_id!r} in {self.path}")
        return self._open(self.series["array_path"].iat[self._series_index[series_id]])

    @cached_property
    def _slice_lookup(self) -> tuple[dict[str, int], list[str], np.ndarray]:
        if self.slices is None:
            raise ValueError(f"{self.path} is a 3D dataset: it has no slices")
        ids = {sid: i for i, sid in enumerate(self.slices["slice_id"])}
        return ids, self.slices["array_path"].tolist(), self.slices["row"].to_numpy()

    def slice(self, key: str | int) -> np.ndarray:
        """One 2D slice ``(H, W)`` by ``slice_id`` or by its row number in ``slices``."""
        ids, paths, rows = self._slice_lookup
        i = ids[key] if isinstance(key, str) else int(key)
        return self._open(paths[i])[rows[i]]

    @property
    def labels(self) -> dict[int, str]:
        """The label-map ids of ``masks/`` and their names (0 = background); {} without masks."""
        return {int(k): str(v) for k, v in self.card.get("labels", {}).items()}

    def mask(self, series_id: str) -> np.ndarray | None:
        """The series' label map, memory-mapped read-only, with the shape of its array (3D:
        ``(1, X, Y, Z)``; 2D: ``(n, H, W)``), or None when the series has no mask."""
        self.array(series_id)  # a KeyError for an unknown series, and the index built
        assert self._series_index is not None
        path = self._mask_paths[self._series_index[series_id]]
        return self._open(path) if path else None

    @cached_property
    def _mask_paths(self) -> list[str]:
        if "mask_path" not in self.series.columns:
            return [""] * len(self.series)
        return self.series["mask_path"].fillna("").astype(str).tolist()

    def slice_mask(self, key: str | int) -> np.ndarray | None:
        """The label map ``(H, W)`` of one 2D slice (by ``slice_id`` or row number in ``slices``),
        or None when its series has no mask."""
        ids, _, rows = self._slice_lookup
        i = ids[key] if isinstance(key, str) else int(key)
        path = self._slice_mask_paths[i]
        return self._open(path)[rows[i]] if path else None

    @cached_property
    def _slice_mask_paths(self) -> list[str]:
        assert self.slices is not None
        if "mask_path" not in self.slices.columns:
            return [""] * len(self.slices)
        return self.slices["mask_path"].fillna("").astype(str).tolist()

    def split(self, name: str) -> pd.DataFrame:
        """Rows of ``slices`` (2D) or ``series`` (3D) in split ``name``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; one of {', '.join(SPLITS)}")
        table = self.slices if self.slices is not None else self.series
        return table[table["split"] == name].reset_index(drop=True)


def parse_boxes(value: Any) -> dict[int, tuple[int, ...]]:
    """A ``boxes`` cell as ``{label id: (lo..., hi...)}``: half-open voxel bounds in the stored
    array's index order (2D slice: ``(r0, c0, r1, c1)``; 3D: ``(x0, y0, z0, x1, y1, z1)``); {} for none."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return {}
    return {int(k): tuple(int(x) for x in v) for k, v in json.loads(value).items()}
