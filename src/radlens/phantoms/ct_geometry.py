"""Voxel grid in millimetres and soft-edged shapes painted into it, for the CT phantom.

Shapes are defined in patient millimetres (RAS: +x right, +y anterior, +z superior, origin at
the volume centre) so the anatomy does not change with the grid size or spacing. Small shapes
(tubes, balls) are evaluated only inside their bounding box, which keeps a whole vessel tree
cheap on a 96 x 96 x 64 grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """Voxel centres of a ``shape`` grid with ``spacing`` mm, centred on the origin."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    def axis(self, i: int) -> np.ndarray:
        """Coordinates (mm) of the voxel centres along axis ``i``."""
        n, s = self.shape[i], self.spacing[i]
        return ((np.arange(n, dtype=np.float32) - (n - 1) / 2) * s).astype(np.float32)

    def coords(self, sl: Slices | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable x, y, z coordinate arrays, over the whole grid or a sub-box."""
        sl = sl or (slice(None),) * 3
        x = self.axis(0)[sl[0]][:, None, None]
        y = self.axis(1)[sl[1]][None, :, None]
        z = self.axis(2)[sl[2]][None, None, :]
        return x, y, z

    @property
    def voxel(self) -> float:
        """Mean voxel size (mm): the width of a soft edge."""
        return float(np.mean(self.spacing))

    def affine(self) -> np.ndarray:
        """RAS affine of the grid (voxel index -> mm, centre voxel at the origin)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(self.shape, self.spacing)]
        return aff

    def box(self, lo: np.ndarray, hi: np.ndarray) -> Slices | None:
        """Index slices of the voxels inside the mm box ``[lo, hi]``; None when it misses the grid."""
        out = []
        for i in range(3):
            n, s = self.shape[i], self.spacing[i]
            a = int(np.floor(lo[i] / s + (n - 1) / 2))
            b = int(np.ceil(hi[i] / s + (n - 1) / 2)) + 1
            a, b = max(a, 0), min(b, n)
            if a >= b:
                return None
            out.append(slice(a, b))
        return out[0], out[1], out[2]

    def to_index(self, p: np.ndarray) -> np.ndarray:
        """Nearest voxel index of a point in mm (clipped to the grid)."""
        idx = np.rint(np.asarray(p) / np.asarray(self.spacing) + (np.asarray(self.shape) - 1) / 2)
        return np.clip(idx, 0, np.asarray(self.shape) - 1).astype(int)

    def to_mm(self, idx: np.ndarray) -> np.ndarray:
        """Millimetre position of voxel indices ``(..., 3)``."""
        return (np.asarray(idx) - (np.asarray(self.shape) - 1) / 2) * np.asarray(self.spacing)


def soft(distance_inside: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy from a signed distance (positive inside), ramping over ``width`` mm."""
    return np.clip(0.5 + distance_inside / width, 0.0, 1.0).astype(np.float32)


def tube(grid: Grid, p0: np.ndarray, p1: np.ndarray, radius: float) -> tuple[Slices, np.ndarray] | None:
    """Occupancy of a capsule (segment p0-p1 with ``radius`` mm) inside its bounding box."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    pad = radius + grid.voxel
    sl = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
    if sl is None:
        return None
    x, y, z = grid.coords(sl)
    d = p1 - p0
    length2 = float(d @ d) or 1e-6
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2, 0, 1)
    dist = np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2)
    return sl, soft(radius - dist, grid.voxel)


def ball(grid: Grid, centre: np.ndarray, radii: np.ndarray | float) -> tuple[Slices, np.ndarray] | None:
    """Occupancy of an axis-aligned ellipsoid (radii in mm) inside its bounding box."""
    c = np.asarray(centre, np.float32)
    r = np.broadcast_to(np.asarray(radii, np.float32), (3,))
    sl = grid.box(c - r - grid.voxel, c + r + grid.voxel)
    if sl is None:
        return None
    x, y, z = grid.coords(sl)
    rho = np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2)
    # (1 - rho) * min radius approximates the distance to the surface near it.
    return sl, soft((1.0 - rho) * float(r.min()), grid.voxel)


def paint(
    hu: np.ndarray,
    shape: tuple[Slices, np.ndarray] | None,
    value: float,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Blend ``value`` into ``hu`` by the shape's occupancy (only where ``where`` is True).

    Returns the full-grid boolean mask of voxels at least half covered (empty when the shape
    missed the grid).
    """
    mask = np.zeros(hu.shape, bool)
    if shape is None:
        return mask
    sl, occ = shape
    if where is not None:
        occ = occ * where[sl]
    hu[sl] += occ * (value - hu[sl])
    mask[sl] = occ >= 0.5
    return mask
