"""Tiny on-disk inputs in the layouts radlens imports (BIDS, CT-RATE, DICOM tree), for the prepare tests."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

SIDECAR = {
    "Modality": "MR",
    "MagneticFieldStrength": 3,
    "Manufacturer": "SIEMENS",
    "ManufacturersModelName": "Skyra",
    "ScanningSequence": "SE",
    "SequenceVariant": "SK_SP",
    "MRAcquisitionType": "2D",
    "FlipAngle": 90,
    "RepetitionTime": 4.5,
}


def head(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A bright ellipsoid on a dark background with some texture (every slice has foreground)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:2]], indexing="ij"))
    disc = ((grid**2).sum(0) < 0.6).astype(np.float32)
    vol = np.repeat(disc[:, :, None], shape[2], axis=2) * (100 + 20 * rng.random(shape, dtype=np.float32))
    return vol.astype(np.float32)


def write_bids(root: Path, subjects: int = 3, shape: tuple[int, int, int] = (12, 12, 4)) -> list[Path]:
    """``sub-XX/ses-01/anat/sub-XX_ses-01_{T1w,T2w}.nii.gz`` + sidecars; returns the NIfTI paths."""
    import nibabel as nib

    paths = []
    for s in range(subjects):
        folder = root / f"sub-{s:02d}" / "ses-01" / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        for k, (name, te) in enumerate((("T1w", 0.003), ("T2w", 0.09))):
            stem = f"sub-{s:02d}_ses-01_{name}"
            nib.save(nib.Nifti1Image(head(shape, 10 * s + k), np.diag([2.0, 2.0, 3.0, 1.0])), folder / f"{stem}.nii.gz")
            (folder / f"{stem}.json").write_text(json.dumps({**SIDECAR, "EchoTime": te, "SeriesDescription": name}))
            paths.append(folder / f"{stem}.nii.gz")
    return paths


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """mtime and content hash of every file under ``root`` (to check sources are never written)."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


CTRATE_FINDINGS_HEADER = (
    "Medical material,Arterial wall calcification,Cardiomegaly,Pericardial effusion,"
    "Coronary artery wall calcification,Hiatal hernia,Lymphadenopathy,Emphysema,Atelectasis,Lung nodule,"
    "Lung opacity,Pulmonary fibrotic sequela,Pleural effusion,Mosaic attenuation pattern,"
    "Peribronchial thickening,Consolidation,Bronchiectasis,Interlobular septal thickening"
)


def write_ctrate(root: Path, stored_as_hu_column: bool = True, shape: tuple[int, int, int] = (16, 16, 8)) -> list[str]:
    """A CT-RATE layout: train patients 1-4 (scan a, recon 1; patient 1 also scan b), valid patients 1-2.

    Volumes hold raw values (HU + 1024, intercept -1024) except ``train_2_a_1`` which is stored
    in HU (flag 1). Returns the volume names.
    """
    import nibabel as nib
    import pandas as pd

    names = ["train_1_a_1", "train_1_b_1", "train_2_a_1", "train_3_a_1", "train_4_a_1", "valid_1_a_1", "valid_2_a_1"]
    rows_meta, rows_rep, rows_lab = [], [], []
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        split, patient, scan, _ = name.split("_")
        folder = root / "dataset" / split / f"{split}_{patient}" / f"{split}_{patient}_{scan}"
        folder.mkdir(parents=True, exist_ok=True)
        hu = np.full(shape, -1000.0, dtype=np.float32)
        hu[4:12, 4:12, :] = 40.0 + 10 * i
        stored_hu = name == "train_2_a_1"
        data = hu if stored_hu else hu + 1024.0
        nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), folder / f"{name}.nii.gz")
        meta = {"VolumeName": f"{name}.nii.gz", "Manufacturer": "SIEMENS", "RescaleSlope": 1.0,
                "RescaleIntercept": -1024.0, "XYSpacing": "[1.5, 1.5]", "ZSpacing": 3.0}
        if stored_as_hu_column:
            meta["StoredAsHU"] = int(stored_hu)
        rows_meta.append(meta)
        rows_rep.append({"VolumeName": f"{name}.nii.gz", "ClinicalInformation_EN": "Cough.",
                         "Technique_EN": "Non-contrast chest CT.", "Findings_EN": f"Findings of {name}.",
                         "Impressions_EN": "No acute finding."})
        rows_lab.append({"VolumeName": f"{name}.nii.gz", **dict(zip(CTRATE_FINDINGS_HEADER.split(","), rng.integers(0, 2, 18)))})
    for split, prefix in (("train", "train"), ("validation", "valid")):
        pick = [i for i, n in enumerate(names) if n.startswith(prefix)]
        pd.DataFrame([rows_meta[i] for i in pick]).to_csv(root / f"{split}_metadata.csv", index=False)
        pd.DataFrame([rows_rep[i] for i in pick]).to_csv(root / f"{split}_reports.csv", index=False)
        pd.DataFrame([rows_lab[i] for i in pick]).to_csv(root / f"{'valid' if prefix == 'valid' else 'train'}_predicted_labels.csv", index=False)
    return names


# CT-RATE's public repository: which tree holds what, and where its tables sit.
CTRATE_TREES = {"raw": "", "fixed": "_fixed"}
CTRATE_TABLES = {
    "train": ("metadata/train_metadata.csv", "radiology_text_reports/train_reports.csv",
              "multi_abnormality_labels/train_predicted_labels.csv"),
    "valid": ("metadata/validation_metadata.csv", "radiology_text_reports/validation_reports.csv",
              "multi_abnormality_labels/valid_predicted_labels.csv"),
}
# Volume name -> (RescaleIntercept of its raw copy, soft-tissue HU inside its body box).
CTRATE_VOLUMES = {
    "train_1_a_1": (-1024.0, 40.0), "train_1_a_2": (-8192.0, 50.0), "train_2_a_1": (-8192.0, 60.0),
    "valid_1_a_1": (-1024.0, 70.0), "valid_2_a_1": (-8192.0, 80.0),
}


def ctrate_hu(name: str, shape: tuple[int, int, int] = (16, 16, 8)) -> np.ndarray:
    """The true HU of a volume of :func:`write_ctrate_repo`: air (-1000) around a body box (fat
    ring of -100 HU, soft tissue of the volume's value inside) with a bone rod of 700 HU."""
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[3:13, 3:13, :] = -100.0
    hu[4:12, 4:12, :] = CTRATE_VOLUMES[name][1]
    hu[7:9, 10:12, :] = 700.0
    return hu


def write_ctrate_repo(root: Path, trees: tuple[str, ...] = ("raw", "fixed"), shape: tuple[int, int, int] = (16, 16, 8)) -> Path:
    """CT-RATE as its public repository holds it, with tiny volumes; returns ``root / "dataset"``.

    ``dataset/{train,valid}/`` hold raw int16 values, ``(HU - RescaleIntercept) / RescaleSlope``
    with slope 1 and the intercept of :data:`CTRATE_VOLUMES` (-1024 or -8192);
    ``dataset/{train,valid}_fixed/`` hold the same volumes in HU. ``trees`` picks which trees exist.
    Tables under ``dataset/metadata``, ``dataset/radiology_text_reports`` and
    ``dataset/multi_abnormality_labels``; the metadata CSV has no column saying which tree a file
    is in, and gives every volume its scanner's intercept (the fixed copies too, as CT-RATE does).
    """
    import nibabel as nib
    import pandas as pd

    dataset = root / "dataset"
    findings = CTRATE_FINDINGS_HEADER.split(",")
    rows: dict[str, list[list[dict[str, object]]]] = {"train": [[], [], []], "valid": [[], [], []]}
    for i, (name, (intercept, _)) in enumerate(CTRATE_VOLUMES.items()):
        split, patient, scan, _ = name.split("_")
        hu = ctrate_hu(name, shape)
        for tree in trees:
            folder = dataset / f"{split}{CTRATE_TREES[tree]}" / f"{split}_{patient}" / f"{split}_{patient}_{scan}"
            folder.mkdir(parents=True, exist_ok=True)
            stored = hu if tree == "fixed" else hu - intercept
            nib.save(nib.Nifti1Image(stored.astype(np.int16), np.diag([1.5, 1.5, 3.0, 1.0])), folder / f"{name}.nii.gz")
        volume = f"{name}.nii.gz"
        meta, reports, labels = rows[split]
        meta.append({"VolumeName": volume, "Manufacturer": "SIEMENS" if intercept == -1024 else "PHILIPS",
                     "ManufacturerModelName": "Model", "PatientSex": "M", "PatientAge": "061Y", "Rows": shape[0],
                     "Columns": shape[1], "XYSpacing": "[1.5, 1.5]", "ZSpacing": 3.0, "NumberofSlices": shape[2],
                     "RescaleIntercept": intercept, "RescaleSlope": 1.0, "RescaleType": "HU"})
        reports.append({"VolumeName": volume, "ClinicalInformation_EN": "Cough.", "Technique_EN": "Non-contrast chest CT.",
                        "Findings_EN": f"Findings of {name}.", "Impressions_EN": "No acute finding."})
        labels.append({"VolumeName": volume, **{f: (i + k) % 2 for k, f in enumerate(findings)}})
    for split, tables in rows.items():
        for rel, table in zip(CTRATE_TABLES[split], tables):
            (dataset / rel).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(table).to_csv(dataset / rel, index=False)
    return dataset


def write_dicom_tree(root: Path, slices: int = 4, mr: str = "MR_small.dcm") -> Path:
    """A DICOM tree: a CT series built from pydicom's CT_small.dcm, one pydicom MR file, a non-DICOM file.

    Returns the CT series folder.
    """
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ct_dir = root / "patientA" / "ct"
    ct_dir.mkdir(parents=True)
    series_uid = generate_uid(entropy_srcs=["radlens-test-ct"])
    for k in range(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["radlens-test-ct", str(k)])
        ds.InstanceNumber = k + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.save_as(ct_dir / f"slice{k:02d}.dcm")
    mr_dir = root / "patientB"
    mr_dir.mkdir()
    shutil.copyfile(get_testdata_file(mr), mr_dir / "mr.dcm")
    (root / "notes.txt").write_text("not a DICOM file\n")
    return ct_dir
