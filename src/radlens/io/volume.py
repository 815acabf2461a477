"""The in-memory volume: channel-first RAS+ array with its affine and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radlens.io.metadata import AcquisitionMetadata


@dataclass
class Volume:
    """One image volume.

    ``array`` is channel-first ``(C, X, Y, Z)`` with voxel axes in RAS+ order as produced
    by the readers (nibabel/MONAI convention); ``affine`` maps voxel indices to RAS
    millimetres. A 2D image is ``(C, X, Y, 1)``. CT arrays hold Hounsfield units once
    ``hu`` is True.

    dtype (as the readers give it): float32, or the stored integer dtype (native byte order)
    when the reader applies no value scaling: NIfTI/MGH without ``scl_slope``/``scl_inter``
    and SimpleITK formats keep e.g. int16/uint8; NIfTI with header scaling, DICOM (which
    applies RescaleSlope/Intercept) and ``read_volume(rescale=...)`` give float32. Memory: the
    array has positive strides (``torch.from_numpy`` accepts it) but need not be C-contiguous
    (NIfTI volumes keep the file's Fortran order); use ``np.ascontiguousarray`` where a
    consumer needs that. Integer arrays overflow in arithmetic (int16 * 2): convert first.
    ``radlens.prepare`` accepts all of these; its resampling and intensity steps output float32.
    """

    array: np.ndarray
    affine: np.ndarray
    metadata: AcquisitionMetadata = field(default_factory=AcquisitionMetadata)
    source: Path | None = None
    hu: bool = False
    # Unit vector (RAS world space) of the *stored* slice axis, i.e. the through-plane
    # direction of the acquisition as the file or DICOM series was written. The readers
    # set it before reorienting; ``radlens.prepare.slicing.acquisition_plane`` maps it to
    # axial/coronal/sagittal/oblique. None when the source has no slice axis (a 2D image).
    slice_normal: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.array.ndim != 4:
            raise ValueError(f"Volume array must be (C, X, Y, Z), got shape {self.array.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (X, Y, Z)."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each voxel axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Orientation codes of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    @property
    def modality(self) -> str | None:
        return self.metadata.Modality
