"""The CSV tables importers start from: finding one, reading it, checking its columns, naming the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def find_table(root: Path) -> Path:
    """``root`` itself when it is a file, else the one ``.csv`` in the folder ``root``."""
    if root.is_file():
        return root
    found = sorted(root.glob("*.csv")) if root.is_dir() else []
    if len(found) != 1:
        raise InputError(root, f"expected a CSV file or a folder with exactly one .csv, found {len(found)}")
    return found[0]


def read_table(table: Path, required: Sequence[str] = (), **read_options: Any) -> pd.DataFrame:
    """``table`` as a DataFrame (``pandas.read_csv`` options passed on); InputError naming the file
    when it cannot be read or lacks a ``required`` column."""
    import pandas as pd

    try:
        frame = pd.read_csv(table, **read_options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(table, f"cannot read as CSV: {err}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(table, f"missing column(s) {missing}; has {list(frame.columns)}")
    return frame
