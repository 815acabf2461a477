"""2D image reading: 8/16-bit PNG, grey-as-RGB, NPY; colour and bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radlens.errors import InputError
from radlens.io.images import read_image2d


def test_png_bit_depths_keep_their_values(tmp_path: Path) -> None:
    grey8 = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    grey16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    Image.fromarray(np.repeat(grey8[..., None], 3, axis=-1)).save(tmp_path / "rgb.png")
    for name, expected in (("g8.png", grey8), ("g16.png", grey16), ("rgb.png", grey8)):
        image = read_image2d(tmp_path / name)
        assert image.dtype == np.float32 and image.shape == (3, 4)
        np.testing.assert_array_equal(image, expected)


def test_colour_and_corrupt_images_are_refused(tmp_path: Path) -> None:
    colour = np.zeros((3, 4, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.png")
    with pytest.raises(InputError, match="red.png: colour image"):
        read_image2d(tmp_path / "red.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="bad.png: cannot read image"):
        read_image2d(tmp_path / "bad.png")
    with pytest.raises(InputError, match="not a 2D image format"):
        read_image2d(Path(__file__))


def test_npy_slices(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.ones((1, 5, 6), np.float64))
    assert read_image2d(tmp_path / "s.npy").shape == (5, 6)
    np.save(tmp_path / "vol.npy", np.ones((2, 5, 6)))
    with pytest.raises(InputError, match="one numeric 2D slice"):
        read_image2d(tmp_path / "vol.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [np.inf, 0.0]]))
    with pytest.raises(InputError, match="2 of 4 voxels are NaN or infinite"):
        read_image2d(tmp_path / "nan.npy")
