"""SimpleITK formats: the LPS direction/origin/spacing becomes the right RAS affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from radlens.errors import InputError
from radlens.io.sitk import read_sitk


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_world_coordinates_match_itk(tmp_path: Path, suffix: str) -> None:
    data = np.arange(1, 2 * 3 * 4 + 1, dtype=np.int16).reshape(4, 3, 2)  # (Z, Y, X)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.5, 1.0, 2.0))
    image.SetOrigin((10.0, -5.0, 3.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(image, str(path))
    volume = read_sitk(path)
    assert volume.orientation == "RAS" and volume.shape == (3, 2, 4)
    for index in np.argwhere(volume.array[0] > 0):  # every voxel: same value at the same world point
        world_ras = volume.affine @ np.r_[index, 1.0]
        lps = (-world_ras[0], -world_ras[1], world_ras[2])
        itk_index = image.TransformPhysicalPointToIndex(lps)
        assert image[itk_index] == volume.array[0][tuple(index)]


def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.mha"
    path.write_text("ObjectType = Image\nNDims = 3\n")
    with pytest.raises(InputError, match="broken.mha: SimpleITK cannot read it"):
        read_sitk(path)
