"""The CT phantom: CT-RATE layout, stored values vs metadata, tissue HU, findings, reports."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from radlens.errors import ConfigError
from radlens.phantoms.ct import CTPhantomConfig, PatientTask, generate_ct_phantom, plan_patients, render_patient
from radlens.phantoms.ct_anatomy import TISSUES, cardiothoracic_ratio
from radlens.phantoms.ct_findings import FINDINGS, IMPLEMENTED, LABEL_IDS
from radlens.phantoms.ct_layout import METADATA_COLUMNS, REPORT_COLUMNS, decode
from radlens.phantoms.ct_reports import NEGATIONS, TERMS

SMALL = CTPhantomConfig(patients=8, seed=3, shape=(64, 64, 40), spacing=(5.0, 5.0, 6.5),
                        second_scan_rate=0.5, second_recon_rate=0.6, already_hu_fraction=0.4)
# One patient on the default grid, where every finding must be visible.
ALL = replace(SMALL, patients=2, shape=CTPhantomConfig.shape, spacing=CTPhantomConfig.spacing,
              prevalences={f: 1.0 for f in IMPLEMENTED})
NONE = replace(ALL, patients=1, prevalences={f: 0.0 for f in IMPLEMENTED})
# Median HU a finding's mask must show (after noise and kernel blur).
FINDING_HU = {
    "Medical material": (400, 3100), "Arterial wall calcification": (200, 3100),
    "Coronary artery wall calcification": (200, 3100), "Cardiomegaly": (0, 80), "Pericardial effusion": (-60, 40),
    "Lymphadenopathy": (-400, 80), "Emphysema": (-1024, -905), "Atelectasis": (-250, 80), "Lung nodule": (-400, 80),
    "Lung opacity": (-700, -350), "Pleural effusion": (-60, 50), "Consolidation": (-250, 80),
}
TISSUE_HU = {"air": (-1024, -950), "lung": (-900, -780), "fat": (-130, -60), "muscle": (10, 80), "heart": (10, 70),
             "bone": (300, 3000)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("ct")
    return out, generate_ct_phantom(out, SMALL)


def _volumes(cfg: CTPhantomConfig) -> list:
    return [v for t in plan_patients(cfg) for v in render_patient(cfg, t)]


def test_ct_rate_layout_and_tables(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, truth = dataset
    assert set(truth["split"]) == {"train", "valid"}
    assert not set(truth.loc[truth.split == "train", "patient_id"]) & set(truth.loc[truth.split == "valid", "patient_id"])
    for split, reports, labels, meta in (("train", "train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv"),
                                         ("valid", "validation_reports.csv", "valid_predicted_labels.csv", "validation_metadata.csv")):
        rep, lab, met = (pd.read_csv(out / n) for n in (reports, labels, meta))
        assert list(rep.columns) == REPORT_COLUMNS
        assert list(lab.columns) == ["VolumeName", *FINDINGS]
        assert list(met.columns) == METADATA_COLUMNS
        assert list(rep.VolumeName) == list(lab.VolumeName) == list(met.VolumeName)
        for name in rep.VolumeName:
            m = re.fullmatch(rf"({split}_\d+)_([ab])_([12])\.nii\.gz", name)
            assert m, name
            rel = Path(split) / m.group(1) / f"{m.group(1)}_{m.group(2)}" / name
            assert (out / rel).is_file() and (out / "masks" / rel.parent / f"{rel.name[:-7]}_mask.nii.gz").is_file()
        assert (lab[[f for f in FINDINGS if f not in IMPLEMENTED]] == 0).all().all()
        xy = [ast.literal_eval(s) for s in met.XYSpacing]
        assert all(len(v) == 2 and v[0] > 0 for v in xy)
    assert (out / "masks" / "labels.json").is_file() and (out / "phantom.json").is_file()


def test_stored_values_follow_metadata_table(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, truth = dataset
    meta = pd.concat([pd.read_csv(out / "train_metadata.csv"), pd.read_csv(out / "validation_metadata.csv")])
    assert set(meta.RescaleIntercept) == {-1024.0, -8192.0}
    assert set(meta.StoredAsHU) == {True, False}
    for _, row in meta.iterrows():
        img = nib.load(out / truth.set_index("VolumeName").loc[row.VolumeName, "path"])
        assert img.get_data_dtype() == np.int16
        assert img.dataobj.slope == 1 and img.dataobj.inter == 0  # scaling lives only in the table
        stored = np.asarray(img.dataobj)
        hu = decode(stored, row.RescaleSlope, row.RescaleIntercept, bool(row.StoredAsHU))
        corner = float(np.median(hu[:4, :4, :]))
        assert -1024 <= corner <= -950, row.VolumeName
        if row.StoredAsHU:  # applying the intercept again would be the classic mistake
            assert float(np.median(stored[:4, :4, :] * row.RescaleSlope + row.RescaleIntercept)) < -2000
        else:
            assert float(np.median(stored[:4, :4, :])) > 0


def test_tissue_hu_ranges() -> None:
    for vol in _volumes(NONE):
        hu = decode(vol.stored, vol.row["RescaleSlope"], vol.row["RescaleIntercept"], vol.row["StoredAsHU"])
        for tissue, (lo, hi) in TISSUE_HU.items():
            median = float(np.median(hu[vol.tissue == TISSUES[tissue]]))
            assert lo <= median <= hi, (vol.name, tissue, median)


@pytest.mark.parametrize("cfg", [ALL, NONE], ids=["all-present", "all-absent"])
def test_each_finding_mask_matches_its_label_and_hu(cfg: CTPhantomConfig) -> None:
    for vol in _volumes(cfg):
        hu = decode(vol.stored, 1.0, vol.row["RescaleIntercept"], vol.row["StoredAsHU"])
        for name in FINDINGS:
            mask = vol.labels == LABEL_IDS[name]
            assert bool(mask.any()) == bool(vol.row[name]), (vol.name, name)
            if vol.row[name]:
                lo, hi = FINDING_HU[name]
                assert lo <= float(np.median(hu[mask])) <= hi, (vol.name, name, float(np.median(hu[mask])))
        ctr = cardiothoracic_ratio(vol.tissue)
        assert (ctr > 0.5) == bool(vol.row["Cardiomegaly"]), ctr


def test_dataset_masks_and_lesion_table_match_labels(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, truth = dataset
    lesions = pd.read_csv(out / "lesions.csv", keep_default_na=False)
    for _, row in truth.iterrows():
        labels = np.asarray(nib.load(out / row.mask_path).dataobj)
        for name in FINDINGS:
            assert bool((labels == LABEL_IDS[name]).any()) == bool(row[name]), (row.VolumeName, name)
        table = lesions[lesions.VolumeName == row.VolumeName].sort_values("slice_index")
        assert list(table.slice_index) == list(range(labels.shape[2]))
        assert list(table.lesion) == [int(labels[:, :, k].any()) for k in range(labels.shape[2])]
        named = {f for s in table.findings for f in s.split(";") if f}
        assert named == {n for n in FINDINGS if row[n]}


def _mentions(text: str) -> dict[str, list[bool]]:
    """Finding -> for each sentence naming it, whether that sentence is a negation."""
    found: dict[str, list[bool]] = {}
    for sentence in re.split(r"(?<=\.)\s+", text.lower()):
        negated = any(n in sentence for n in NEGATIONS)
        for name, terms in TERMS.items():
            if any(t in sentence for t in terms):
                found.setdefault(name, []).append(negated)
    return found


def test_reports_agree_with_labels(dataset: tuple[Path, pd.DataFrame]) -> None:
    rows = list(dataset[1].to_dict("records")) + [v.row for v in _volumes(ALL) + _volumes(NONE)]
    texts = set()
    for row in rows:
        mentions = _mentions(f"{row['Findings_EN']} {row['Impressions_EN']}")
        for name in FINDINGS:
            if row[name]:
                assert False in mentions.get(name, []), (row["VolumeName"], name, row["Findings_EN"])
            else:
                assert all(mentions.get(name, [True])), (row["VolumeName"], name, row["Findings_EN"])
        texts.add(row["Findings_EN"])
    reports = pd.read_csv(dataset[0] / "train_reports.csv")
    assert reports.Impressions_EN.str.len().min() > 0 and len(texts) > len(rows) // 3


def test_recons_share_report_and_labels_but_differ_in_pixels(dataset: tuple[Path, pd.DataFrame]) -> None:
    out, truth = dataset
    multi = truth.groupby("scan_id").filter(lambda g: len(g) == 2)
    assert not multi.empty and truth.groupby("patient_id").scan_id.nunique().max() == 2
    first, second = multi.iloc[0], multi.iloc[1]
    assert first.Findings_EN == second.Findings_EN and first.ConvolutionKernel != second.ConvolutionKernel
    a = np.asarray(nib.load(out / first.path).dataobj)
    b = np.asarray(nib.load(out / second.path).dataobj)
    assert not np.array_equal(a, b)


def test_deterministic_for_seed_and_workers(tmp_path: Path) -> None:
    cfg = CTPhantomConfig(patients=3, seed=5, shape=(32, 32, 20), spacing=(10.0, 10.0, 13.0))
    one = generate_ct_phantom(tmp_path / "one", cfg, workers=1)
    two = generate_ct_phantom(tmp_path / "two", cfg, workers=2)
    other = generate_ct_phantom(tmp_path / "other", replace(cfg, seed=6), workers=1)
    pd.testing.assert_frame_equal(one, two)
    for table in ("train_reports.csv", "train_metadata.csv", "lesions.csv"):
        assert (tmp_path / "one" / table).read_text() == (tmp_path / "two" / table).read_text()
    for rel in one.path:
        assert np.array_equal(nib.load(tmp_path / "one" / rel).dataobj, nib.load(tmp_path / "two" / rel).dataobj)
    assert not one[["VolumeName", "Findings_EN"]].equals(other[["VolumeName", "Findings_EN"]])


def test_demo_size_has_second_scans_and_recons() -> None:
    # The scan/recon structure is drawn before any geometry, so a tiny grid shows the demo's.
    cfg = CTPhantomConfig(patients=24, shape=(16, 16, 16), spacing=(20.0, 20.0, 16.0))
    rows = [v.row for v in _volumes(cfg)]
    scans = {r["scan_id"] for r in rows}
    assert any(s.endswith("_b") for s in scans)
    assert len(rows) > len(scans)
    assert {r["split"] for r in rows} == {"train", "valid"}


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown finding"):
        CTPhantomConfig(prevalences={"Pneumothorax": 0.1})
    with pytest.raises(ConfigError):
        CTPhantomConfig(valid_fraction=1.5)



def test_plan_numbers_patients_per_split_from_one() -> None:
    tasks = plan_patients(CTPhantomConfig(patients=10, valid_fraction=0.3))
    for split, count in (("train", 7), ("valid", 3)):
        assert sorted(t.number for t in tasks if t.split == split) == list(range(1, count + 1))
    assert [t.index for t in tasks] == list(range(10)) and isinstance(tasks[0], PatientTask)


def test_cli_writes_dataset_and_preview(tmp_path: Path) -> None:
    from radlens.cli import main

    out = tmp_path / "cli"
    argv = ["phantom", "ct", str(out), "--patients", "2", "--seed", "1", "--preview", "true",
            "--phantom.shape", "[32, 32, 20]", "--phantom.spacing", "[10, 10, 13]"]
    assert main(argv) == 0
    assert (out / "preview.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "train_reports.csv")) >= 1
