"""Report sections: CT-RATE rows, free-text headers, the text CT-CLIP trains and evaluates on."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from radlens.errors import ConfigError, InputError
from radlens.prepare.reports import ReportSections, from_ctrate_row, report_text, split_report

CTRATE_ROW = {
    "VolumeName": "valid_53_a_1.nii.gz",
    "ClinicalInformation_EN": "Cough. ",
    "Technique_EN": "Non-contrast chest CT.",
    "Findings_EN": "Trachea and both main bronchi are open. No pleural effusion.",
    "Impressions_EN": "No acute pathology.",
}


def test_ctrate_row_maps_columns_and_reads_nan_as_missing() -> None:
    s = from_ctrate_row(CTRATE_ROW)
    assert s == ReportSections("Cough.", "Non-contrast chest CT.", CTRATE_ROW["Findings_EN"], "No acute pathology.")
    # A pandas row straight from the CSV, with an empty clinical field.
    row = pd.DataFrame([{**CTRATE_ROW, "ClinicalInformation_EN": math.nan, "Technique_EN": "  "}]).iloc[0]
    s = from_ctrate_row(row)
    assert s.clinical is None and s.technique is None and s.impression == "No acute pathology."
    assert s.to_columns()["report_findings"] == CTRATE_ROW["Findings_EN"]


def test_ctrate_row_without_report_columns_is_an_input_error() -> None:
    with pytest.raises(InputError, match="valid_53_a_1.nii.gz.*Findings_EN"):
        from_ctrate_row({"VolumeName": "valid_53_a_1.nii.gz", "ClinicalInformation_EN": "x"})


def test_free_text_with_headers_of_several_spellings() -> None:
    text = (
        "CT CHEST WITHOUT CONTRAST\n"
        "Clinical Information: cough.\n"
        "COMPARISON: None available.\n"
        "technique:\naxial images, 1 mm.\n"
        "FINDINGS:\nNo effusion. Findings are stable.\n"
        "Nodule in the right upper lobe. Impression: small nodule."
    )
    s = split_report(text)
    assert s.clinical == "cough."
    assert s.technique == "axial images, 1 mm."
    # "Findings are stable" is prose, not a header; the exam title before the first header is dropped.
    assert s.findings == "No effusion. Findings are stable.\nNodule in the right upper lobe."
    assert s.impression == "small nodule."
    assert "None available" not in repr(s)


def test_headers_alone_on_their_line_and_synonyms() -> None:
    s = split_report("History\nFever\nFindings\nClear lungs.\nConclusion\nNormal study.\nImpressions: none more.")
    assert s == ReportSections(clinical="Fever", findings="Clear lungs.", impression="Normal study.\nnone more.")


def test_text_without_headers_is_findings_and_preamble_fills_missing_findings() -> None:
    assert split_report("  Lungs are clear.\n") == ReportSections(findings="Lungs are clear.")
    assert split_report("Lungs are clear.\nIMPRESSION: normal") == ReportSections(
        findings="Lungs are clear.", impression="normal"
    )


def test_empty_report_gives_empty_sections_and_empty_text() -> None:
    for empty in ("", "   \n\t", None, math.nan):
        assert split_report(empty) == ReportSections()
    assert report_text(split_report("")) == ""


def test_report_text_is_findings_for_training_and_findings_impression_for_evaluation() -> None:
    s = from_ctrate_row(CTRATE_ROW)
    assert report_text(s) == CTRATE_ROW["Findings_EN"]
    assert report_text(s, ("findings", "impression")) == CTRATE_ROW["Findings_EN"] + " No acute pathology."
    assert report_text(ReportSections(impression="x"), ("findings", "impression")) == "x"
    with pytest.raises(ConfigError, match="valid: clinical"):
        report_text(s, ("finding",))


def test_ctrate_tables_need_every_section_and_rows_need_findings() -> None:
    from radlens.prepare.reports import check_ctrate_columns, ctrate_training_text

    check_ctrate_columns(list(CTRATE_ROW), "train_reports.csv")
    with pytest.raises(InputError, match=r"train_reports.csv: not a CT-RATE reports table: missing column\(s\) \['Findings_EN'\]"):
        check_ctrate_columns([c for c in CTRATE_ROW if c != "Findings_EN"], "train_reports.csv")
    assert ctrate_training_text(from_ctrate_row(CTRATE_ROW), "x line 2") == CTRATE_ROW["Findings_EN"]
    with pytest.raises(InputError, match="^x line 2: empty Findings_EN"):
        ctrate_training_text(from_ctrate_row({**CTRATE_ROW, "Findings_EN": float("nan")}), "x line 2")
