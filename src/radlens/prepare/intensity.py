"""Intensity preprocessing: CT windowing in Hounsfield units, per-volume MRI percentile scaling.

CT keeps its physical unit, so one fixed window serves every scan; MRI has no unit, so each
volume is scaled by its own percentiles (over the non-zero voxels by default, so the air
around the head does not set the scale). Outputs are float32.

Whether CT values really are HU is checked on the data (:func:`check_hu`): air must sit near
-1000 HU and the body in the soft-tissue range, which a missing or doubled slope/intercept
never gives (it moves everything by 1024 or 8192 HU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radlens.errors import InputError
from radlens.io.volume import Volume

CtOutput = Literal["0,1", "-1,1", "hu/1000"]
# How a CT importer decides whether a file holds HU (PrepareConfig.already_hu): "auto" per volume
# from where the file comes and the metadata, "auto-column" from a per-volume flag column only,
# "yes"/"no" for every volume; the data is checked with check_hu in every case.
HuRule = Literal["auto", "auto-column", "yes", "no"]
# check_hu: the bands (HU) where air and the body must sit, and the least share of voxels in each.
AIR_BAND = (-1100.0, -900.0)
BODY_BAND = (-200.0, 300.0)
MIN_AIR_FRACTION = 0.02
MIN_BODY_FRACTION = 0.10


@dataclass(frozen=True)
class IntensityConfig:
    """CT: clip HU to ``ct_window`` and map to ``ct_output`` ("hu/1000" is CT-CLIP's
    "clip to [-1000, 1000], divide by 1000"). MRI: map the ``mri_percentiles`` of the
    ``mri_mask`` voxels to [0, 1] and clip.

    Attributes:
        ct_window: CT: the HU range [low, high] kept; values outside are clipped to it.
        ct_output: CT: what the window maps to: 0,1 or -1,1, or hu/1000 (HU divided by 1000).
        mri_percentiles: MRI: the percentiles [low, high] of the masked voxels that map to 0 and 1.
        mri_mask: MRI: the voxels the percentiles are taken over: nonzero or all.
    """

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


@dataclass(frozen=True)
class HuCheck:
    """Where a CT volume's values sit once read as HU: the share of voxels in :data:`AIR_BAND`
    (air outside the body, trachea, lungs) and in :data:`BODY_BAND` (fat, muscle, blood, organs)."""

    air_fraction: float
    body_fraction: float

    @property
    def plausible(self) -> bool:
        """Air near -1000 HU and a body in the soft-tissue range, as every chest CT has.

        A raw volume read without its intercept puts air near +24 (or +7192) HU, a volume in HU
        shifted once more puts the soft tissue into the air band and leaves the body band to
        bone: both fail one of the two shares.
        """
        return self.air_fraction >= MIN_AIR_FRACTION and self.body_fraction >= MIN_BODY_FRACTION

    def describe(self) -> str:
        """One line for tables and failure reasons."""
        return (
            f"{self.air_fraction:.1%} of voxels in the air band {_band(AIR_BAND)} HU (needs >= {MIN_AIR_FRACTION:.0%}), "
            f"{self.body_fraction:.1%} in the body band {_band(BODY_BAND)} HU (needs >= {MIN_BODY_FRACTION:.0%})"
        )

    def columns(self) -> dict[str, float]:
        """The shares as series-table columns."""
        return {"hu_air_fraction": round(self.air_fraction, 4), "hu_body_fraction": round(self.body_fraction, 4)}


def _band(band: tuple[float, float]) -> str:
    return f"[{band[0]:g}, {band[1]:g}]"


def check_hu(array: np.ndarray) -> HuCheck:
    """Measure where the values of a CT volume in HU sit (:class:`HuCheck`).

    Volumes over about 2 million voxels are measured on every second voxel along each axis,
    which changes the shares by far less than the margins and keeps the check cheap.
    """
    values = np.asarray(array)
    if values.size > 2_000_000:
        values = values[(slice(None),) * (values.ndim - 3) + (slice(None, None, 2),) * 3]
    n = max(values.size, 1)
    air = np.count_nonzero((values >= AIR_BAND[0]) & (values <= AIR_BAND[1]))
    body = np.count_nonzero((values >= BODY_BAND[0]) & (values <= BODY_BAND[1]))
    return HuCheck(air / n, body / n)


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
