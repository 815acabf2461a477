"""Seeded byte fuzzing of the readers: whatever the bytes, ``read_volume`` returns a volume or raises
InputError naming the file; no other exception escapes, and no case is slow (a slow case was a
header declaring gigabytes that the reader allocated before finding the file short).

Valid files from nibabel's and pydicom's test data and from radlens's phantom writers get a few
hundred mutations each: bit flips, overwritten runs (random or extreme bytes), truncation and
inserted bytes, mostly in the header where a change matters; gzip files are mutated inside the
compressed stream as well as in the gzip bytes. A mutated file that still reads is fine.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file
from support.bad_files import mutate
from support.layouts import head
from support.synthetic_dicom import MR_SIDECAR, write_enhanced

from radlens.errors import InputError
from radlens.io.reader import read_volume

CASES = 250  # mutations per file format
SLOW_S = 1.0  # no single read of these small files may take longer
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian: where a DICOM header ends


def problem(path: Path, expected_name: Path) -> str | None:
    """None when ``read_volume(path)`` returns a volume, or raises an InputError naming
    ``expected_name`` (the file, or a file in the folder); otherwise what went wrong."""
    start = time.perf_counter()
    try:
        read_volume(path)
    except InputError as err:
        if str(expected_name) not in str(err):
            return f"{path.name}: InputError does not name {expected_name}: {err}"
    except Exception as err:  # the point of the test: report any other type, whatever it is
        return f"{path.name}: {type(err).__module__}.{type(err).__name__}: {err}"
    elapsed = time.perf_counter() - start
    return f"{path.name}: took {elapsed:.1f} s" if elapsed > SLOW_S else None


def run_cases(write: Callable[[int, random.Random], tuple[Path, Path]], seed: int, cases: int = CASES) -> list[str]:
    """``cases`` seeded cases: ``write(i, rng)`` writes one damaged input and returns (what to read,
    the name its InputError must contain)."""
    rng = random.Random(seed)
    problems = []
    for i in range(cases):
        path, name = write(i, rng)
        found = problem(path, name)
        if found:
            problems.append(found)
    return problems


def phantom_nifti(folder: Path) -> Path:
    """A small phantom NIfTI as radlens's MRI phantom writes it (gzip, qform and sform set)."""
    from radlens.phantoms.mri_io import write_nifti

    volume = (head((10, 12, 6), seed=1) * 10).astype(np.int16)
    return write_nifti(folder / "phantom.nii.gz", volume, np.diag([1.2, 1.0, 3.0, 1.0]))


def phantom_dicom(folder: Path) -> list[Path]:
    """A small classic MR series as radlens's MRI phantom writes it."""
    from radlens.phantoms.mri_dicom import write_dicom_series

    volume = (head((10, 12, 4), seed=2) * 10).astype(np.int16)
    return write_dicom_series(folder, volume, np.diag([1.2, 1.0, 3.0, 1.0]), 2, MR_SIDECAR, "sub-001", "fuzz")


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_nifti_raises_only_input_error(tmp_path: Path) -> None:
    sources = [Path(data_path) / "anatomical.nii", Path(data_path) / "functional.nii"]
    originals = [p.read_bytes() for p in sources]

    def write(i: int, rng: random.Random) -> tuple[Path, Path]:
        path = tmp_path / f"case{i:03d}.nii"
        path.write_bytes(mutate(originals[i % 2], rng, header=352))
        return path, path

    assert run_cases(write, seed=1) == []


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_nifti_gz_raises_only_input_error(tmp_path: Path) -> None:
    sources = [Path(data_path) / "example_nifti2.nii.gz", Path(data_path) / "standard.nii.gz", phantom_nifti(tmp_path)]
    streams = [gzip.decompress(p.read_bytes()) for p in sources]
    compressed = [p.read_bytes() for p in sources]

    def write(i: int, rng: random.Random) -> tuple[Path, Path]:
        k = i % 3
        path = tmp_path / f"case{i:03d}.nii.gz"
        if i % 4 == 3:  # the gzip bytes themselves (CRC, length, deflate blocks)
            path.write_bytes(mutate(compressed[k], rng, header=64))
        else:  # the NIfTI stream inside a valid gzip file
            path.write_bytes(gzip.compress(mutate(streams[k], rng, header=544), compresslevel=1, mtime=0))
        return path, path

    assert run_cases(write, seed=2) == []


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_dicom_files_raise_only_input_error(tmp_path: Path) -> None:
    sources = [
        Path(get_testdata_file("CT_small.dcm")),
        Path(get_testdata_file("MR_small.dcm")),
        write_enhanced(tmp_path / "enhanced.dcm"),
        phantom_dicom(tmp_path / "phantom")[0],
    ]
    originals = [p.read_bytes() for p in sources]
    headers = [data.rfind(PIXEL_DATA_TAG) if PIXEL_DATA_TAG in data else len(data) for data in originals]

    def write(i: int, rng: random.Random) -> tuple[Path, Path]:
        k = i % len(originals)
        path = tmp_path / f"case{i:03d}.dcm"
        path.write_bytes(mutate(originals[k], rng, header=headers[k]))
        return path, path

    assert run_cases(write, seed=3) == []


@pytest.mark.filterwarnings("ignore")
def test_a_series_folder_with_one_fuzzed_file_raises_only_input_error(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    files = phantom_dicom(folder)
    originals = [p.read_bytes() for p in files]
    header = originals[0].rfind(PIXEL_DATA_TAG)
    damaged = [0]

    def write(i: int, rng: random.Random) -> tuple[Path, Path]:
        files[damaged[0]].write_bytes(originals[damaged[0]])  # the previous case's file, repaired
        damaged[0] = rng.randrange(len(files))
        files[damaged[0]].write_bytes(mutate(originals[damaged[0]], rng, header=header))
        return folder, folder

    assert run_cases(write, seed=4, cases=120) == []  # each case reads the four files of the series


def test_the_mutations_do_damage(tmp_path: Path) -> None:
    """The fuzzing is not vacuous: many mutated files are refused, and some still read."""
    source = (Path(data_path) / "anatomical.nii").read_bytes()
    rng = random.Random(1)
    refused = 0
    for i in range(60):
        path = tmp_path / f"case{i}.nii"
        path.write_bytes(mutate(source, rng, header=352))
        try:
            read_volume(path)
        except InputError:
            refused += 1
    assert 10 < refused < 60
