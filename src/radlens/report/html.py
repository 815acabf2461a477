"""A self-contained HTML report: headline numbers, tables and figures in one file.

Figures are embedded as base64 PNG so the report can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{border-bottom:2px solid #446}h2{margin-top:2em;color:#335}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#eef}td:first-child,th:first-child{text-align:left}
.headline{display:flex;gap:1em;flex-wrap:wrap}.card{background:#f4f6fb;border-radius:6px;padding:0.6em 1em}
.card b{font-size:1.4em;display:block}img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}
pre{background:#f7f7f7;padding:0.5em;overflow-x:auto;font-size:0.85em}
"""


@dataclass
class Section:
    """One titled part of the report: free text, tables and figures, shown in that order."""

    title: str
    text: str = ""
    tables: list[tuple[str, Any]] = field(default_factory=list)  # (caption, DataFrame or mapping)
    figures: list[tuple[str, Path]] = field(default_factory=list)  # (caption, PNG path)
    code: str = ""


def _table_html(caption: str, table: Any) -> str:
    import pandas as pd

    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame([table])
    body = frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0, escape=True)
    return f"<p><i>{html.escape(caption)}</i></p>{body}" if caption else body


def _figure_html(caption: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}"/><figcaption>{html.escape(caption)}</figcaption></figure>'


def render_report(title: str, headline: Mapping[str, str], sections: Sequence[Section]) -> str:
    """The report as an HTML string."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if headline:
        cards = "".join(f"<div class='card'><b>{html.escape(v)}</b>{html.escape(k)}</div>" for k, v in headline.items())
        parts.append(f"<div class='headline'>{cards}</div>")
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        parts.extend(_table_html(caption, table) for caption, table in section.tables)
        parts.extend(_figure_html(caption, path) for caption, path in section.figures if Path(path).exists())
        if section.code:
            parts.append(f"<pre>{html.escape(section.code)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, headline: Mapping[str, str], sections: Sequence[Section]) -> Path:
    """Render and write the report atomically (temp file, then rename)."""
    from radlens.common.atomic import write_bytes_atomic

    return write_bytes_atomic(Path(path), render_report(title, headline, sections).encode("utf-8"))
