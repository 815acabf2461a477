"""The CSV tables (and text files) importers start from: read them strictly, say where they are wrong.

Two kinds of problems, two answers:

- **the table itself is unusable** (not UTF-8, an unterminated quote, no header, a required column
  missing): :class:`~radlens.errors.InputError` naming the file (and the line), before any work;
- **one row is wrong** (a label that is not 0/1, a key listed twice with different values): the
  importer turns it into a failure row for that one volume, naming the file, line and column
  (:func:`binary_labels`, :func:`read_keyed`); the rest of the batch goes on.

Lines are counted as a text editor shows them: the header is line 1, and a record whose quoted
text spans several lines is named by the line it starts on. Text is UTF-8 (a byte-order mark is
allowed); anything else is refused rather than decoded into different characters.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

LINE = "_line"  # the column :func:`read_table` adds with ``lines=True``: where each record starts


def find_table(root: Path) -> Path:
    """``root`` itself when it is a file, else the one ``.csv`` in the folder ``root``."""
    if root.is_file():
        return root
    found = sorted(root.glob("*.csv")) if root.is_dir() else []
    if len(found) != 1:
        raise InputError(root, f"expected a CSV file or a folder with exactly one .csv, found {len(found)}")
    return found[0]


def read_text(path: Path) -> str:
    """The text of ``path`` as UTF-8 (a BOM is dropped); InputError naming the file, the line and
    the byte when it is not UTF-8 or cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(path, f"cannot read: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(path, f"not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} (offset {err.start}); "
                               "save the file as UTF-8") from None


def _record_lines(text: str, **read_options: Any) -> list[int] | None:
    """The line each data record of a CSV text starts on (the header is line 1), or None when the
    options are ones the csv module cannot follow."""
    if set(read_options) - {"dtype", "keep_default_na", "na_values"}:
        return None
    reader = csv.reader(io.StringIO(text))
    starts: list[int] = []
    start = 1
    for number, row in enumerate(reader):
        if number > 0 and any(cell.strip() for cell in row):
            starts.append(start)
        start = reader.line_num + 1
    return starts


def read_table(table: Path, required: Sequence[str] = (), lines: bool = False, **read_options: Any) -> pd.DataFrame:
    """``table`` as a DataFrame (``pandas.read_csv`` options passed on); InputError naming the file
    when it is not UTF-8, cannot be parsed (an unterminated quote, ...) or lacks a ``required`` column.

    ``lines=True`` adds the column :data:`LINE`: the line each record starts on.
    """
    import pandas as pd

    text = read_text(table)
    try:
        frame = pd.read_csv(io.StringIO(text), **read_options)
    except pd.errors.EmptyDataError:
        raise InputError(table, "empty: no header line") from None
    except pd.errors.ParserError as err:
        message = " ".join(str(err).split())
        hint = " (an unterminated quote?)" if "EOF inside string" in message else ""
        raise InputError(table, f"cannot read as CSV{hint}: {message}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(table, f"missing column(s) {missing}; has {[c for c in frame.columns]}")
    if lines:
        starts = _record_lines(text, **read_options)
        frame[LINE] = starts if starts is not None and len(starts) == len(frame) else list(range(2, len(frame) + 2))
    return frame


def _shape(text: str) -> str:
    """Letters, digits and the rest of ``text`` as runs: ``valid_53_a_1.nii.gz`` -> ``a_9_a_9.a.a``."""
    return re.sub(r"[A-Za-z]+", "a", re.sub(r"[0-9]+", "9", text))


def check_no_swallowed_rows(frame: pd.DataFrame, key: str, table: Path) -> None:
    """Refuse a table in which a quoted cell holds lines that look like further rows of it: a quote
    left open earlier takes every row up to the next quote into one cell, and those rows vanish."""
    shapes = {_shape(str(v).strip()) for v in frame[key].dropna()}
    for column in frame.columns:
        if column in (key, LINE):
            continue
        for index, value in frame[column].items():
            if not isinstance(value, str) or "\n" not in value:
                continue
            for later in value.splitlines()[1:]:
                head = later.split(",", 1)[0].strip().strip('"')
                if "," in later and head and _shape(head) in shapes:
                    where = f"line {frame.at[index, LINE]}" if LINE in frame.columns else f"record {index + 1}"
                    raise InputError(table, f"{where}: the quoted {column} runs on over what looks like another row "
                                            f"({head}, ...): an unterminated quote?")


@dataclass
class KeyedTable:
    """Rows of one or more CSVs by key: ``frame`` indexed by the key (one row per key, with
    ``_source`` = ``"<file> line <n>"``), keys left out because their rows disagree (key -> why),
    and notes on identical duplicate rows that were read once."""

    frame: pd.DataFrame
    conflicts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def source(self, key: str) -> str:
        """``"<file> line <n>"`` of the row of ``key``."""
        return str(self.frame.at[key, "_source"])


def read_keyed(
    tables: Sequence[Path], key: str, required: Sequence[str] = (), normalise: Callable[[str], str] = str.strip
) -> KeyedTable:
    """Read ``tables`` (each checked as :func:`read_table` and :func:`check_no_swallowed_rows` do)
    and index their rows by ``normalise(key value)``.

    A key listed more than once with the same values is read once (and noted); with different
    values it is a conflict, left out with the places it is listed: which row is right cannot be
    known. Rows with an empty key are refused (InputError naming the line).
    """
    import pandas as pd

    frames = []
    for table in tables:
        frame = read_table(table, [key, *required], lines=True)
        check_no_swallowed_rows(frame, key, table)
        empty = frame[key].isna() | (frame[key].astype(str).str.strip() == "")
        if empty.any():
            raise InputError(table, f"line {int(frame.loc[empty, LINE].iloc[0])}: empty {key}")
        frame[key] = [normalise(str(v)) for v in frame[key]]
        frame["_source"] = [f"{table.name} line {n}" for n in frame[LINE]]
        frames.append(frame.drop(columns=[LINE]))
    rows = pd.concat(frames, ignore_index=True)
    values = [c for c in rows.columns if c not in (key, "_source")]
    conflicts: dict[str, str] = {}
    notes: list[str] = []
    for name, group in rows[rows[key].duplicated(keep=False)].groupby(key, sort=True):
        places = ", ".join(group["_source"])
        if len(group[values].astype(str).drop_duplicates()) == 1:
            notes.append(f"{key} {name} listed {len(group)} times with the same values ({places}): read once")
        else:
            conflicts[str(name)] = f"{key} listed {len(group)} times with different values ({places}): which is right is unknown"
    rows = rows[~rows[key].isin(list(conflicts))].drop_duplicates(key, keep="first")
    return KeyedTable(rows.set_index(key), conflicts, notes)


def binary_value(value: Any) -> int | None:
    """0 or 1 from ``0``/``1`` (int, float or text); None for anything else (NaN, ``"abc"``, 2, ``""``)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value) if not (isinstance(value, float) and math.isnan(value)) and value in (0, 1) else None
    text = str(value).strip()
    return int(float(text)) if re.fullmatch(r"[01](\.0*)?", text) else None


def integer_value(value: Any) -> int | None:
    """An integer from ``3``, ``3.0`` or ``"3"``; None for anything else (NaN, ``"abc"``, 2.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    text = str(value).strip()
    return int(float(text)) if re.fullmatch(r"[+-]?[0-9]+(\.0*)?", text) else None


def shown(value: Any) -> str:
    """A cell as the user wrote it: ``empty``, ``2`` (not ``np.int64(2)``), ``'abc'``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return "empty"
    value = value.item() if hasattr(value, "item") else value
    return repr(value) if isinstance(value, str) else str(value)


def binary_labels(row: pd.Series, columns: Sequence[str], where: str) -> dict[str, int]:
    """The 0/1 labels of ``columns`` in ``row``; InputError whose reason names ``where`` (the file and
    line), the column and the value when one is empty or not 0/1."""
    out: dict[str, int] = {}
    for column in columns:
        value = binary_value(row[column])
        if value is None:
            raise InputError(None, f"{where}: label {column!r} is {shown(row[column])}, not 0 or 1")
        out[column] = value
    return out
