"""`radlens demo --quick`: the main job end to end on embedded data, as `make demo` runs it (smaller)."""

from __future__ import annotations

import json

import pandas as pd

from radlens.cli import main


def test_quick_demo_runs_every_stage_and_writes_the_report(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "CT zero-shot macro AUROC" in printed and "report:" in printed
    for name in ("samples-mni152", "samples-dicom", "phantom-mri", "phantom-ct"):
        card = json.loads((out / "prepared" / name / "dataset.json").read_text())
        assert card["counts"]["series"] > 0
    assert (out / "runs" / "mri-clip" / "best" / "bundle.json").is_file()
    assert (out / "runs" / "ct-clip" / "best" / "bundle.json").is_file()
    zs = json.loads((out / "results" / "ct-zeroshot" / "metrics.json").read_text())
    assert 0.0 <= zs["macro"]["auroc"] <= 1.0
    predictions = pd.read_csv(out / "results" / "ct-zeroshot" / "predictions.csv")
    assert set(zs["per_finding"]) <= set(predictions.columns)
    contrast = json.loads((out / "results" / "mri-contrast" / "metrics.json").read_text())
    assert 0.0 <= contrast["balanced_accuracy"] <= 1.0
    report = (out / "report.html").read_text()
    assert "CT zero-shot findings" in report and "data:image/png;base64" in report
    # The CLEAR / LeCL stage: three slice encoders, bags, MIL in CV, its section in the report.
    assert "CT MIL test macro AUROC, LeCL slice features" in printed and "attention-MIL" in report
    for tag in ("random", "moco", "lecl"):
        mil = json.loads((out / "lesions" / "mil" / tag / "metrics.json").read_text())
        assert mil["test"]["ensemble"]["per_finding"]
    # The MRGen stage: synthetic T2w images from T1w masks, segmenters scored on real T2w, its report section.
    assert "MRGen mean Dice on real T2w" in printed and "MRGen: synthetic T2w" in report
    mrgen = json.loads((out / "mrgen" / "mrgen.json").read_text())
    assert mrgen["synth"]["kept"] > 0 and all(0.0 <= arm["mean_dice"] <= 1.0 for arm in mrgen["dice"].values())
    # PHI of pydicom's sample files never reaches the prepared tables or the report.
    series = pd.read_parquet(out / "prepared" / "samples-dicom" / "series.parquet")
    for phi in ("CompressedSamples", "JFK IMAGING"):
        assert phi not in series.to_csv() and phi not in report
    # Running it again over the same folder works (the demo's own runs are replaced).
    assert main(["demo", "--out", str(out), "--quick", "--workers", "1"]) == 0
