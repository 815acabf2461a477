"""Tissue label maps of the MRI phantom: the anatomy that made a series' image, as integer labels on its grid.

Every series gets ``<stem>_dseg.nii.gz`` (uint8, the image's shape and affine) and the phantom root a
BIDS look-up table ``dseg.tsv`` (``index``/``name``) naming the ids of :data:`TISSUE_LABELS`, which
``radlens prepare bids`` reads (a ``_dseg`` beside an image is its mask).

A voxel's label is the tissue that makes up most of it: the subject's tissue fractions go through
the same slab averaging as the signal (:func:`radlens.phantoms.mri_acquisition.slice_volume`), so
a thick slice is labelled by what its slab contains, not by the one fine voxel nearest its centre
(the two agree on isotropic 3D series, whose grid is the anatomy's). Background is everything that
is not brain (air, skull, scalp fat). Lesion voxels are exactly those of the series' lesion mask
(``_desc-lesion_mask``, lesion fraction > 0.5); lesions replace white matter, so a voxel partly
lesioned but under the mask's threshold counts its lesion fraction as white matter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from radlens.phantoms.mri_anatomy import Anatomy

TISSUE_LABELS = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter", 4: "lesion"}
LESION = 4
# Anatomy fraction maps behind ids 1..3 (lesion fractions join white matter before the vote).
_TISSUES = ("CSF", "GM", "WM")


def tissue_label_map(anatomy: Anatomy, axis: int, thickness: float, brain: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """The uint8 label map of one series on its acquisition grid (RAS order, as its image before reorienting).

    ``brain`` is the slab-averaged brain fraction the image was made with, ``lesion`` its binary lesion mask.
    """
    from radlens.phantoms.mri_acquisition import slice_volume

    fractions = {t: anatomy.fractions[t] for t in _TISSUES}
    if "lesion" in anatomy.fractions:
        fractions["WM"] = fractions["WM"] + anatomy.fractions["lesion"]
    sliced = [slice_volume(fractions[t], anatomy.affine, axis, thickness)[0] for t in _TISSUES]
    votes = np.stack([1.0 - np.asarray(brain, np.float32), *sliced])
    labels = np.argmax(votes, axis=0).astype(np.uint8)
    labels[lesion > 0] = LESION
    return labels


def write_label_table(path: Path) -> Path:
    """The BIDS ``dseg.tsv`` naming :data:`TISSUE_LABELS` (written atomically)."""
    from radlens.common.atomic import write_bytes_atomic

    rows = "".join(f"{index}\t{name}\n" for index, name in TISSUE_LABELS.items())
    return write_bytes_atomic(path, ("index\tname\n" + rows).encode())
