"""``preview.png`` for the MRI phantom: one subject's contrasts side by side, lesions outlined.

The images are read back from the written files with nibabel and put in RAS order, so the preview
also shows that the stored orientation and affine round-trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radlens.common.montage import save_montage
from radlens.phantoms.mri_acquisition import PLANE_AXIS

if TYPE_CHECKING:
    import pandas as pd


def _canonical(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj)


def write_preview(out: Path, truth: pd.DataFrame, max_series: int = 8) -> Path:
    """Montage of the series of the first subject with lesions (else the first subject)."""
    with_lesions = truth[truth["lesion_count"] > 0]
    subject = (with_lesions if len(with_lesions) else truth)["subject"].iloc[0]
    images, titles, masks = [], [], []
    for row in truth[truth["subject"] == subject].head(max_series).itertuples():
        image = _canonical(out / row.file)
        mask = _canonical(out / row.lesion_mask) if row.lesion_mask else np.zeros(image.shape, np.uint8)
        axis = PLANE_AXIS[row.plane]
        load = np.moveaxis(mask, axis, 0).reshape(mask.shape[axis], -1).sum(axis=1)
        k = int(np.argmax(load)) if load.any() else image.shape[axis] // 2
        images.append(np.rot90(np.take(image, k, axis=axis)).astype(np.float32))
        masks.append(np.rot90(np.take(mask, k, axis=axis)))
        ti = "" if np.isnan(row.InversionTime) else f" TI {row.InversionTime * 1000:.0f}"
        titles.append(f"{row.contrast} {row.sequence} {row.plane}\nTE {row.EchoTime * 1000:.0f} "
                      f"TR {row.RepetitionTime * 1000:.0f}{ti} FA {row.FlipAngle:.0f} {row.MagneticFieldStrength}T")
    return save_montage(images, titles, out / "preview.png", masks=masks)
