"""Intensity preprocessing: CT windowing in Hounsfield units, per-volume MRI percentile scaling.

CT keeps its physical unit, so one fixed window serves every scan; MRI has no unit, so each
volume is scaled by its own percentiles (over the non-zero voxels by default, so the air
around the head does not set the scale). Outputs are float32.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radlens.errors import InputError
from radlens.io.volume import Volume

CtOutput = Literal["0,1", "-1,1", "hu/1000"]


@dataclass(frozen=True)
class IntensityConfig:
    """CT: clip HU to ``ct_window`` and map to ``ct_output`` ("hu/1000" is CT-CLIP's
    "clip to [-1000, 1000], divide by 1000"). MRI: map the ``mri_percentiles`` of the
    ``mri_mask`` voxels to [0, 1] and clip."""

    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    ct_output: CtOutput = "-1,1"
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    mri_mask: Literal["nonzero", "all"] = "nonzero"


def _check_values(array: np.ndarray) -> None:
    """Reject arrays no normalisation can make sense of: NaN/inf, all zero, or constant."""
    if array.size == 0:
        raise InputError(None, "volume is empty")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(None, "volume contains NaN or infinite values")
    lo, hi = array.min(), array.max()
    if lo == hi:
        raise InputError(None, "volume is all zero" if lo == 0 else f"volume is constant ({lo})")


def ct_window(
    array: np.ndarray, lo: float, hi: float, output: CtOutput = "-1,1", *, out: np.ndarray | None = None
) -> np.ndarray:
    """Clip HU to ``[lo, hi]`` and map to [0, 1], [-1, 1], or HU/1000, as float32.

    Writes into ``out`` when given (``out=array`` windows a float32 array in place, saving a
    volume-sized copy), else into a new array.
    """
    if not hi > lo:
        raise ValueError(f"CT window must have lo < hi, got ({lo}, {hi})")
    if out is not None and out.dtype != np.float32:
        raise ValueError(f"out must be float32, got {out.dtype}")
    out = np.clip(array, lo, hi, out=out, dtype=np.float32, casting="unsafe")
    if output == "hu/1000":
        out /= np.float32(1000.0)
    elif output == "0,1":
        out -= np.float32(lo)
        out /= np.float32(hi - lo)
    elif output == "-1,1":
        out -= np.float32((lo + hi) / 2.0)
        out /= np.float32((hi - lo) / 2.0)
    else:
        raise ValueError(f"unknown CT output {output!r}; use '0,1', '-1,1' or 'hu/1000'")
    return out


def percentile_normalise(
    array: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5, mask: Literal["nonzero", "all"] = "nonzero"
) -> np.ndarray:
    """Map the ``lo_pct``/``hi_pct`` percentiles (of the non-zero or all voxels) to 0/1, clipped."""
    values = array[array != 0] if mask == "nonzero" else array.ravel()
    if values.size == 0:
        raise InputError(None, "volume has no non-zero voxels to normalise")
    lo, hi = np.percentile(values, [lo_pct, hi_pct])
    if not hi > lo:
        raise InputError(None, f"volume has no contrast between percentiles {lo_pct} and {hi_pct} ({lo})")
    out = np.subtract(array, lo, dtype=np.float32, casting="unsafe")
    out /= np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) to 0..255 with rounding, for 8-bit PNG slices."""
    out = np.clip(array, 0.0, 1.0).astype(np.float32)
    out *= 255.0
    return np.rint(out, out=out).astype(np.uint8)


def apply_intensity(volume: Volume, cfg: IntensityConfig) -> Volume:
    """Window (CT, must be in HU) or percentile-normalise (MR) a volume; errors name its source."""
    modality = (volume.modality or "").upper()
    try:
        _check_values(volume.array)
        if modality == "CT":
            if not volume.hu:
                raise InputError(None, "CT volume is not in HU (hu=False): apply rescale slope/intercept on read")
            array = ct_window(volume.array, *cfg.ct_window, cfg.ct_output)
        elif modality in ("MR", "MRI"):
            array = percentile_normalise(volume.array, *cfg.mri_percentiles, cfg.mri_mask)
        else:
            raise InputError(None, f"modality is {volume.modality!r}; intensity preprocessing needs 'CT' or 'MR'")
    except InputError as err:
        raise InputError(volume.source, err.reason) from None
    return dataclasses.replace(volume, array=array)
