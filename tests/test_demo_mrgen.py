"""The MRGen chain of the demo and the proof: its report pieces, and (slow) the whole QUICK chain end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radlens.demo_mrgen import ARMS, mrgen_section, mrgen_table, run_chain


def _result(grid: Path) -> dict:
    dice = {"mean_dice": 0.61234, "ci": {"low": 0.5, "high": 0.7, "n": 100}, "n_cases": 4,
            "per_label": {"CSF": 0.3, "grey matter": 0.7, "white matter": 0.8, "lesion": None}}
    return {"dice": {ARMS["source"]: dice, ARMS["filtered"]: {**dice, "mean_dice": None}},
            "synth": {"masks": 10, "kept": 18, "skipped_near_empty": 1, "masks_by_level": {"level 0": 8, "level 1": 2}},
            "contrast_check": {"accuracy": 0.9, "chance": 0.5, "real_reference": 0.95}, "grid": str(grid), "test_patients": 4}


def test_the_table_and_section_state_every_arm(tmp_path: Path) -> None:
    rows = mrgen_table(_result(tmp_path / "missing.png"))
    assert rows[0] == {"segmenter trained on": ARMS["source"], "mean Dice (95% CI)": "0.612 (0.50-0.70)", "CSF": "0.300",
                       "grey matter": "0.700", "white matter": "0.800", "lesion": "n/a"}
    assert rows[1]["mean Dice (95% CI)"].startswith("n/a")
    section = mrgen_section(_result(tmp_path / "missing.png"))
    assert "18 T2w images from 10 T1w masks" in section.text and "calls 0.900 of the synthetic images T2w" in section.text
    assert section.figures == []  # no grid written: no figure


@pytest.mark.slow
def test_the_quick_chain_runs_end_to_end(tmp_path: Path) -> None:
    result = run_chain(None, tmp_path / "chain", quick=True)
    assert set(result["dice"]) == {ARMS["source"], ARMS["filtered"]}
    assert all(0.0 <= arm["mean_dice"] <= 1.0 for arm in result["dice"].values())
    assert result["synth"]["kept"] > 0 and Path(result["grid"]).is_file()
    assert json.loads((tmp_path / "chain" / "mrgen.json").read_text())["seconds"]["total"] > 0
