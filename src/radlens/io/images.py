"""2D slice images (PNG and other Pillow formats, NPY) to a float32 ``(H, W)`` array."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from radlens.errors import InputError
from radlens.io.build import check_finite, library_reason

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _grey_from_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(path, f"cannot read image (truncated or corrupt?): {library_reason(err, path)}") from None
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] in (2, 4) and np.any(array[..., -1] != array[..., -1].max()):
        raise InputError(path, "image has a transparent alpha channel; expected a grey image")
    colour = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
    if not np.all(colour == colour[..., :1]):
        raise InputError(path, "colour image (channels differ); radlens reads grey images only")
    return colour[..., 0]


def read_image2d(path: str | PathLike[str]) -> np.ndarray:
    """Read a grey 2D image as float32 ``(H, W)`` in its stored value range.

    8- and 16-bit grey PNGs keep their values; an RGB(A) image is accepted only when its
    three channels are equal (a grey image saved as RGB) and it is opaque. ``.npy`` files
    must hold one 2D slice (singleton axes are dropped).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(path, f"cannot read .npy (truncated or holds objects?): {library_reason(err, path)}") from None
        array = np.squeeze(array)
        if array.ndim != 2 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise InputError(path, f"expected one numeric 2D slice, got {array.dtype} array of shape {array.shape}")
    elif suffix in PILLOW_SUFFIXES:
        array = _grey_from_pillow(path)
    else:
        raise InputError(path, f"not a 2D image format radlens reads ({', '.join(PILLOW_SUFFIXES)}, .npy)")
    out = np.asarray(array, dtype=np.float32)
    check_finite(out, path)
    return out
