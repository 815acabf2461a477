"""``radlens prepare`` over folders where damaged files sit among good ones: the batch finishes, each
damaged input is one failures.csv row naming it, and the good ones make the dataset."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.bad_files import mutate, patch_dicom_element
from support.layouts import SIDECAR, head, write_bids
from support.synthetic_dicom import MR_SIDECAR

from radlens.errors import InputError
from radlens.io.reader import read_volume
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig


def _bids_image(root: Path, subject: str, data: bytes, sidecar: dict | None = None) -> str:
    """Put one image (its bytes as given) and its sidecar into the BIDS tree; returns its relative path."""
    folder = root / f"sub-{subject}" / "ses-01" / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_ses-01_T2w"
    (folder / f"{stem}.nii.gz").write_bytes(data)
    (folder / f"{stem}.json").write_text(json.dumps(sidecar or {**SIDECAR, "EchoTime": 0.09}))
    return f"sub-{subject}/ses-01/anat/{stem}.nii.gz"


def _nifti_bytes(data: np.ndarray, **header: object) -> bytes:
    """A gzipped NIfTI of ``data`` with header fields overwritten afterwards, as a damaged writer leaves them."""
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.set_qform(img.affine, code=1)
    raw = bytearray(img.to_bytes())
    hdr = nib.Nifti1Header(binaryblock=bytes(raw[:348]), check=False)
    for name, value in header.items():
        hdr[name] = value
    raw[:348] = hdr.binaryblock
    return gzip.compress(bytes(raw), mtime=0)


def _refused_mutations(good: Path, count: int, scratch: Path) -> list[bytes]:
    """``count`` seeded byte mutations of ``good``'s NIfTI stream that read_volume refuses."""
    stream = gzip.decompress(good.read_bytes())
    rng = random.Random(7)
    found: list[bytes] = []
    probe = scratch / "probe.nii.gz"
    while len(found) < count:
        data = gzip.compress(mutate(stream, rng, header=352), mtime=0)
        probe.write_bytes(data)
        try:
            read_volume(probe)
        except InputError:
            found.append(data)
    return found


@pytest.mark.filterwarnings("ignore")
def test_prepare_bids_with_damaged_files_finishes_with_a_failure_row_each(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    good = write_bids(root, subjects=3, shape=(12, 12, 4))
    image = head((12, 12, 4), seed=5)
    bad: dict[str, str] = {}  # relative path -> what its failure reason must say
    for i, data in enumerate(_refused_mutations(good[0], 8, tmp_path)):
        bad[_bids_image(root, f"fuzz{i}", data)] = ""
    bad[_bids_image(root, "huge", _nifti_bytes(image, dim=[3, 2048, 2048, 1024, 1, 1, 1, 1]))] = "the header declares"
    bad[_bids_image(root, "nocodes", _nifti_bytes(image, qform_code=0, sform_code=0))] = "no valid qform or sform"
    bad[_bids_image(root, "pixdim", _nifti_bytes(image, pixdim=[1, 0, 2, 3, 1, 1, 1, 1]))] = "voxel size pixdim"
    bad[_bids_image(root, "complex", _nifti_bytes(image.astype(np.complex64)))] = "complex voxels"
    bad[_bids_image(root, "negte", _nifti_bytes(image), {**SIDECAR, "EchoTime": -0.01})] = "negative time: EchoTime"
    bad[_bids_image(root, "mixed", _nifti_bytes(image), {**SIDECAR, "EchoTime": 0.09, "RepetitionTime": 4500})] = "cannot both be"
    # Milliseconds in a sidecar are not damage: converted and kept.
    _bids_image(root, "millis", _nifti_bytes(image), {**SIDECAR, "EchoTime": 90, "RepetitionTime": 4500})

    cfg = dataclasses.replace(default_config("bids"), slicing=SliceConfig(slice_shape=(12, 12)))
    ds = prepare_dataset("bids", root, tmp_path / "out", cfg)

    series = ds.series
    assert len(series) == len(good) + 1
    millis = series[series["patient_id"] == "sub-millis"].iloc[0]
    assert (millis["EchoTime"], millis["RepetitionTime"]) == (0.09, 4.5)
    failures = pd.read_csv(tmp_path / "out" / "failures.csv", dtype=str, keep_default_na=False)
    assert len(failures) == len(bad), failures.to_string()
    # One line each, naming the file by its place in the source, never by the absolute path a library put in its message.
    assert not failures["reason"].str.contains("\n").any() and not failures["reason"].str.contains(str(root)).any()
    for rel, reason in bad.items():
        row = failures[failures["path"].str.contains(rel.split("/")[0] + "/", regex=False)]
        assert len(row) == 1 and row["reason"].iloc[0], rel
        assert reason in row["reason"].iloc[0], (rel, row["reason"].iloc[0])


def _phantom_series(folder: Path, subject: str, slices: int = 4) -> list[Path]:
    from radlens.phantoms.mri_dicom import write_dicom_series

    volume = (head((10, 12, slices), seed=len(subject)) * 10).astype(np.int16)
    return write_dicom_series(folder, volume, np.diag([1.2, 1.0, 3.0, 1.0]), 2, MR_SIDECAR, subject, f"{subject}-{folder.name}")


@pytest.mark.filterwarnings("ignore")
def test_prepare_dicom_with_damaged_files_finishes_with_a_failure_row_each(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    for subject in ("sub-001", "sub-002"):
        _phantom_series(root / subject / "t2", subject)
    # A slice whose header cannot be parsed (it cannot even be grouped into its series).
    unparsable = _phantom_series(root / "sub-003" / "t2", "sub-003")
    patch_dicom_element(unparsable[1], 0x0028, 0x0010, value=b"\x06\x00\x00")
    # A slice with a damaged position value: the series reads up to it, then fails naming it.
    damaged = _phantom_series(root / "sub-004" / "t2", "sub-004")
    patch_dicom_element(damaged[2], 0x0020, 0x0032, vr=b"C[")
    # A missing slice: the series is refused, not stacked with uniform spacing.
    gap = _phantom_series(root / "sub-005" / "t2", "sub-005", slices=5)
    gap[2].unlink()
    # A byte-mutated slice that no longer reads.
    fuzzed = _phantom_series(root / "sub-006" / "t2", "sub-006")
    rng, original = random.Random(3), fuzzed[1].read_bytes()
    while True:
        fuzzed[1].write_bytes(mutate(original, rng, header=original.rfind(b"\xe0\x7f\x10\x00")))
        try:
            read_volume(fuzzed[1])
        except InputError:
            break

    ds = prepare_dataset("dicom", root, tmp_path / "out", default_config("dicom"))

    assert len(ds.series) == 2
    failures = pd.read_csv(tmp_path / "out" / "failures.csv", dtype=str, keep_default_na=False)
    lines = list(failures["stage"] + " " + failures["path"] + ": " + failures["reason"])
    assert len(lines) == 5, lines
    # sub-003: the unparsable slice is a discover failure naming it, and its series, a slice short, is refused.
    assert any(line.startswith("discover ") and "/IM0002.dcm: unreadable DICOM file" in line and "BytesLengthException" in line
               for line in lines)
    assert sum("slices are not evenly spaced" in line for line in lines) == 2  # sub-003 and sub-005 (missing slice)
    assert any("(0020,0032)" in line and "NotImplementedError" in line for line in lines)  # sub-004
    assert sorted(failures["stage"]) == ["discover", "prepare", "prepare", "prepare", "prepare"]
