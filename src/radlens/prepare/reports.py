"""Radiology report sections: clinical information, technique, findings, impression.

Reports arrive either already split (CT-RATE's CSV columns) or as free text with headers.
:func:`split_report` recognises a header (case-insensitive, synonyms in :data:`HEADERS`) when it
starts a line, or follows a sentence's full stop, and is followed by a colon; a header alone on
its line needs no colon. Rules:

- no header at all: the whole text is the findings;
- text before the first header (often the exam title) becomes the findings only when the
  report has no findings section, otherwise it is dropped;
- sections that repeat are joined with a newline; ``Comparison`` (and similar) sections are dropped;
- an empty or whitespace-only report gives empty sections (all ``None``), never an error:
  :func:`report_text` then returns ``""`` and the caller decides whether to skip the item.

CT-CLIP trains on the findings and evaluates on findings + impression, which is
``report_text(s)`` and ``report_text(s, ("findings", "impression"))``.

CT-RATE's reports CSV must have all four section columns (:data:`CTRATE_COLUMNS`): a table
without one is refused as a whole (:func:`check_ctrate_columns`), since every volume would get
an empty or different text. A row whose findings are empty has no training text: one failure
for that volume (:func:`ctrate_training_text`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from os import PathLike
from typing import Any

from radlens.errors import ConfigError, InputError

SECTIONS = ("clinical", "technique", "findings", "impression")
IGNORED = "ignored"

# Header text (lower case, single spaces) -> section. Longer synonyms are tried first.
HEADERS: dict[str, str] = {
    "clinical information": "clinical",
    "clinical history": "clinical",
    "clinical indication": "clinical",
    "clinical details": "clinical",
    "clinical data": "clinical",
    "reason for examination": "clinical",
    "reason for exam": "clinical",
    "history": "clinical",
    "indication": "clinical",
    "indications": "clinical",
    "technique": "technique",
    "protocol": "technique",
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "comparison": IGNORED,
    "comparisons": IGNORED,
}

# CT-RATE's report columns (FORMATS.md) -> section.
CTRATE_COLUMNS = {
    "ClinicalInformation_EN": "clinical",
    "Technique_EN": "technique",
    "Findings_EN": "findings",
    "Impressions_EN": "impression",
}

_HEADER_WORDS = "|".join(
    r"\s+".join(map(re.escape, h.split())) for h in sorted(HEADERS, key=len, reverse=True)
)
# A header at a line start (or after a full stop) followed by a colon, or alone on its line.
_HEADER = re.compile(
    rf"(?:^|(?<=\.))[ \t]*(?P<colon>{_HEADER_WORDS})[ \t]*:|^[ \t]*(?P<alone>{_HEADER_WORDS})[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class ReportSections:
    """The sections of one report; ``None`` where the report has none (or only whitespace)."""

    clinical: str | None = None
    technique: str | None = None
    findings: str | None = None
    impression: str | None = None

    def to_columns(self) -> dict[str, str | None]:
        """``report_<section>`` columns for series.parquet."""
        return {f"report_{f.name}": getattr(self, f.name) for f in fields(self)}


def check_ctrate_columns(columns: Iterable[str], table: str | PathLike[str]) -> None:
    """InputError naming ``table`` when it lacks one of CT-RATE's report columns."""
    present = list(columns)
    missing = [column for column in CTRATE_COLUMNS if column not in present]
    if missing:
        raise InputError(table, f"not a CT-RATE reports table: missing column(s) {missing} "
                                f"(needs {', '.join(CTRATE_COLUMNS)}); has {present}")


def ctrate_training_text(sections: ReportSections, where: str) -> str:
    """The text CT-CLIP trains on (the findings); InputError whose reason names ``where`` (the table
    and line) when it is empty."""
    text = report_text(sections)
    if not text:
        raise InputError(None, f"{where}: empty Findings_EN: the report has no findings, so no training text")
    return text


def from_ctrate_row(row: Mapping[str, Any]) -> ReportSections:
    """Sections of one row of CT-RATE's reports CSV (``Findings_EN`` etc.); NaN reads as missing."""
    missing = [column for column in CTRATE_COLUMNS if column not in row]
    if missing:
        raise InputError(row.get("VolumeName") if hasattr(row, "get") else None, f"report row lacks columns {missing}")
    return ReportSections(**{section: _clean(row[column]) for column, section in CTRATE_COLUMNS.items()})


def split_report(text: str | None) -> ReportSections:
    """Sections of a free-text report, by its headers (see the module docstring for the rules)."""
    text = _clean(text)
    if text is None:
        return ReportSections()
    matches = list(_HEADER.finditer(text))
    if not matches:
        return ReportSections(findings=text)
    parts: dict[str, list[str]] = {}
    for match, following in zip(matches, matches[1:] + [None]):
        name = match.group("colon") or match.group("alone")
        section = HEADERS[" ".join(name.lower().split())]
        body = _clean(text[match.end() : following.start() if following else len(text)])
        if body is not None:
            parts.setdefault(section, []).append(body)
    preamble = _clean(text[: matches[0].start()])
    if preamble is not None and "findings" not in parts:
        parts["findings"] = [preamble]
    return ReportSections(**{s: "\n".join(parts[s]) if s in parts else None for s in SECTIONS})


def report_text(sections: ReportSections, which: tuple[str, ...] = ("findings",)) -> str:
    """The named sections that are present, in the order given, joined by a space (``""`` if none)."""
    unknown = [name for name in which if name not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown report section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    return " ".join(value for value in (getattr(sections, name) for name in which) if value)


def _clean(value: Any) -> str | None:
    """Stripped text, or ``None`` for missing/NaN/blank values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None
