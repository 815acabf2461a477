"""``OUT/preview.png`` for the CT phantom: one axial slice per finding, mask outlined."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radlens.common.montage import save_montage
from radlens.phantoms.ct_findings import IMPLEMENTED, LABEL_IDS
from radlens.phantoms.ct_layout import decode

if TYPE_CHECKING:
    import pandas as pd

LUNG_WINDOW = (-1350.0, 150.0)
MEDIASTINAL_WINDOW = (-160.0, 240.0)
# Findings best seen in the lung window; the rest are shown in the mediastinal window.
_LUNG_FINDINGS = {"Emphysema", "Lung nodule", "Lung opacity", "Consolidation", "Atelectasis"}


def axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Axial slice ``k`` of a RAS volume in radiological display (anterior up, patient right on the left)."""
    return volume[::-1, ::-1, k].T


def write_preview(out: Path, truth: pd.DataFrame, max_panels: int = 12) -> Path:
    """Show the first volume with each finding at the slice where its mask is largest."""
    import nibabel as nib

    images, titles, masks, windows = [], [], [], []
    for finding in IMPLEMENTED:
        hits = truth[truth[finding] == 1]
        if hits.empty or len(images) >= max_panels:
            continue
        row = hits.iloc[0]
        stored = np.asarray(nib.load(out / row["path"]).dataobj)
        hu = decode(stored, row["RescaleSlope"], row["RescaleIntercept"], bool(row["StoredAsHU"]))
        mask = np.asarray(nib.load(out / row["mask_path"]).dataobj) == LABEL_IDS[finding]
        k = int(np.argmax(mask.sum(axis=(0, 1))))
        images.append(axial(hu, k))
        masks.append(axial(mask, k))
        titles.append(f"{finding}\n{row['VolumeName'].removesuffix('.nii.gz')} z={k}")
        windows.append(LUNG_WINDOW if finding in _LUNG_FINDINGS else MEDIASTINAL_WINDOW)
    return save_montage(images, titles, out / "preview.png", masks=masks, columns=4, vrange=windows)
