"""The HTML report is one self-contained file with the numbers, tables and figures it was given."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd

from radlens.common.montage import save_montage
from radlens.report.curves import plot_training_curves
from radlens.report.html import Section, write_report


def test_report_embeds_tables_figures_and_escapes_text(tmp_path):
    png = save_montage([np.arange(64.0).reshape(8, 8)], ["ramp"], tmp_path / "fig.png")
    table = pd.DataFrame({"finding": ["Cardiomegaly"], "AUROC": [0.8123]})
    out = write_report(
        tmp_path / "r" / "report.html",
        "Demo <run>",
        {"CT macro AUROC": "0.81"},
        [Section("Results", text="a < b", tables=[("metrics", table)], figures=[("montage", png)])],
    )
    text = out.read_text()
    assert "Demo &lt;run&gt;" in text and "a &lt; b" in text
    assert "Cardiomegaly" in text and "0.812" in text and "CT macro AUROC" in text
    assert base64.b64encode(png.read_bytes()).decode()[:200] in text
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_training_curves_from_lightning_csv(tmp_path):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame(
        {"epoch": [0, 0, 0, 1], "step": [0, 1, 2, 3], "train/loss": [2.0, 1.5, None, 1.0], "val/r1": [None, None, 0.3, None]}
    ).to_csv(csv, index=False)
    png = plot_training_curves(csv, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
