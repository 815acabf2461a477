"""CT windowing and MRI percentile normalisation: values, dtypes, and refusals of bad volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from radlens.errors import InputError
from radlens.io.metadata import AcquisitionMetadata
from radlens.io.volume import Volume
from radlens.prepare.intensity import IntensityConfig, apply_intensity, ct_window, percentile_normalise, to_uint8

HU = np.array([-3024, -1000, -500, 0, 40, 1000, 3071], dtype=np.int16)


def _volume(array: np.ndarray, modality: str, hu: bool = False) -> Volume:
    return Volume(
        array.reshape(1, -1, 1, 1), np.eye(4), AcquisitionMetadata(Modality=modality), Path("/data/scan.nii.gz"), hu
    )


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("hu/1000", [-1.0, -1.0, -0.5, 0.0, 0.04, 1.0, 1.0]),
        ("-1,1", [-1.0, -1.0, -0.5, 0.0, 0.04, 1.0, 1.0]),
        ("0,1", [0.0, 0.0, 0.25, 0.5, 0.52, 1.0, 1.0]),
    ],
)
def test_ct_window_values(output: str, expected: list[float]) -> None:
    out = ct_window(HU, -1000, 1000, output)  # type: ignore[arg-type]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_ct_window_soft_tissue_and_input_untouched() -> None:
    before = HU.copy()
    out = ct_window(HU, -160, 240, "0,1")
    np.testing.assert_allclose(out, [0, 0, 0, 0.4, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(HU, before)
    with pytest.raises(ValueError):
        ct_window(HU, 100, 100)


def test_ct_window_in_place() -> None:
    array = HU.astype(np.float32)
    out = ct_window(array, -1000, 1000, "hu/1000", out=array)
    assert out is array
    np.testing.assert_allclose(array, [-1, -1, -0.5, 0, 0.04, 1, 1], atol=1e-6)
    with pytest.raises(ValueError, match="float32"):
        ct_window(HU, -1000, 1000, out=HU.copy())


def test_percentile_normalise_ignores_background_by_default() -> None:
    array = np.zeros(1000, dtype=np.float32)
    array[500:] = np.linspace(100, 200, 500)
    out = percentile_normalise(array, 0.0, 100.0)
    assert out.dtype == np.float32
    assert out[500] == 0.0 and out[-1] == 1.0
    np.testing.assert_allclose(out[750], (array[750] - 100) / 100, atol=1e-6)
    # Over all voxels the lowest value is the background (0) instead.
    assert percentile_normalise(array, 0.0, 100.0, "all")[500] == pytest.approx(0.5, abs=1e-6)
    clipped = percentile_normalise(array, 10.0, 90.0)
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_to_uint8_rounds_and_clips() -> None:
    out = to_uint8(np.array([-0.5, 0.0, 0.5, 0.999, 1.0, 7.0]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255, 255])


def test_apply_intensity_dispatches_on_modality() -> None:
    ct = apply_intensity(_volume(HU, "CT", hu=True), IntensityConfig(ct_output="hu/1000"))
    np.testing.assert_allclose(ct.array.ravel(), [-1, -1, -0.5, 0, 0.04, 1, 1], atol=1e-6)
    assert ct.hu and ct.source == Path("/data/scan.nii.gz")
    mr = apply_intensity(_volume(np.arange(200, dtype=np.float32), "MR"), IntensityConfig(mri_percentiles=(0, 100)))
    assert mr.array.min() == 0.0 and mr.array.max() == 1.0


@pytest.mark.parametrize(
    ("array", "modality", "hu", "message"),
    [
        (HU, "CT", False, "CT volume is not in HU"),
        (np.array([0.0, np.nan, 3.0]), "MR", False, "NaN"),
        (np.array([1.0, np.inf]), "CT", True, "NaN or infinite"),
        (np.zeros(5), "MR", False, "all zero"),
        (np.full(5, 7.0), "MR", False, "constant"),
        (np.arange(5.0), "PT", False, "modality"),
    ],
)
def test_apply_intensity_rejects_bad_volumes_naming_the_file(
    array: np.ndarray, modality: str, hu: bool, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        apply_intensity(_volume(array, modality, hu), IntensityConfig())
    assert str(info.value).startswith("/data/scan.nii.gz: ")
    assert info.value.path == "/data/scan.nii.gz"
