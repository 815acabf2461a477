"""read_volume: dispatch by path, explicit CT rescale, missing and unknown inputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file
from support.synthetic_dicom import write_series

from radlens.errors import InputError
from radlens.io.reader import read_volume


def test_dispatch_by_suffix_and_folder(tmp_path: Path) -> None:
    assert read_volume(os.path.join(data_path, "anatomical.nii")).shape == (33, 41, 25)
    assert read_volume(get_testdata_file("CT_small.dcm")).hu
    write_series(tmp_path / "series")
    assert read_volume(tmp_path / "series").shape == (7, 6, 5)
    bare = tmp_path / "IM0001"  # DICOM files often have no suffix
    shutil.copy(get_testdata_file("MR_small.dcm"), bare)
    assert read_volume(bare).modality == "MR"


def test_rescale_is_explicit_and_on_top(tmp_path: Path) -> None:
    path = os.path.join(data_path, "anatomical.nii")
    plain = read_volume(path)
    assert not plain.hu and "rescale" not in plain.metadata.extra
    raw = read_volume(path, rescale=(2.0, -1024.0))
    assert plain.array.dtype == np.int16 and raw.array.dtype == np.float32  # int16 * 2 would overflow
    np.testing.assert_allclose(raw.array, plain.array.astype(np.float64) * 2 - 1024)
    assert raw.hu and raw.metadata.extra["rescale"] == {"slope": 2.0, "intercept": -1024.0}
    with pytest.raises(InputError, match="rescale must be"):
        read_volume(path, rescale=(0.0, 1.0))


def test_missing_unknown_and_2d_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.nii.gz: does not exist"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "notes.txt").write_text("x" * 200)
    with pytest.raises(InputError, match="unknown image format"):
        read_volume(tmp_path / "notes.txt")
    (tmp_path / "slice.png").write_bytes(b"")
    with pytest.raises(InputError, match="no orientation"):
        read_volume(tmp_path / "slice.png")


def test_radlens_info_on_a_huge_header_in_a_tiny_file_fails_at_once(tmp_path: Path) -> None:
    import time

    import nibabel as nib

    from radlens.info import describe

    path = tmp_path / "huge.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header(binaryblock=bytes(raw[:348]), check=False)
    header.set_data_shape((2048, 2048, 1024))  # the 8.6 GB that took 20 s and 8.4 GB of memory to refuse
    raw[:348] = header.binaryblock
    path.write_bytes(bytes(raw))
    start = time.perf_counter()
    with pytest.raises(InputError, match="huge.nii: the header declares .* but the file holds only"):
        describe(path)
    with pytest.raises(InputError, match="huge.nii: the header declares"):
        read_volume(path)
    assert time.perf_counter() - start < 2.0
