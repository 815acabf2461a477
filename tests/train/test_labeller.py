"""Report labeller: learns negations from templated reports, labels a CT-RATE reports CSV, refuses bad CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from support.prepared_findings import quick_trainer, write_findings_prepared

from radlens.errors import InputError
from radlens.train.config import OptimConfig

FINDING = "Pleural effusion"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radlens.train.labeller import train_labeller

    root = tmp_path_factory.mktemp("labeller")
    prepared = write_findings_prepared(root / "prep", {"train": 160, "validation": 24, "test": 32}, findings=[FINDING])
    return train_labeller(
        str(prepared), str(root / "run"), encoder="tiny", sections=["findings"], context_length=32, batch_size=16,
        optim=OptimConfig(lr=3e-3, warmup_steps=2), trainer=quick_trainer(max_steps=60, val_every_n_steps=30),
        n_bootstrap=20,
    )


def test_learns_present_vs_negated(run: Path) -> None:
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["per_finding"][FINDING]["f1"] > 0.9
    assert metrics["threshold"] == {"method": "f1", "split": "validation"}


def test_label_reports_writes_ctrate_labels_shape(run: Path, tmp_path: Path) -> None:
    from radlens.train.labeller import label_reports

    reports = pd.DataFrame({
        "VolumeName": ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz", "valid_3_a_1.nii.gz", "valid_4_a_1.nii.gz"],
        "ClinicalInformation_EN": ["Cough."] * 4,
        "Findings_EN": ["Trachea is patent. No pleural effusion.", "Pleural effusion is seen. Bones are unremarkable.",
                        "There is pleural effusion.", ""],
        "Impressions_EN": ["", "", "", ""],
    })
    src = tmp_path / "valid_reports.csv"
    reports.to_csv(src, index=False)
    out = tmp_path / "labels" / "valid_predicted_labels.csv"
    assert label_reports(str(run), str(src), str(out)) == 0
    labels = pd.read_csv(out)
    assert list(labels.columns) == ["VolumeName", FINDING, f"{FINDING} probability"]
    assert labels[FINDING].tolist() == [0, 1, 1]
    failures = pd.read_csv(out.with_name(out.name + ".failures.csv"))
    assert failures["VolumeName"].tolist() == ["valid_4_a_1.nii.gz"]


def test_missing_report_columns_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    from radlens.train.labeller import label_reports

    src = tmp_path / "reports.csv"
    pd.DataFrame({"VolumeName": ["a"], "Impressions_EN": ["No effusion."]}).to_csv(src, index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['Findings_EN'\]"):
        label_reports(str(run / "best"), str(src), str(tmp_path / "out.csv"))
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(InputError, match="neither a model bundle nor a run folder"):
        label_reports(str(tmp_path), str(src), str(tmp_path / "out.csv"))
