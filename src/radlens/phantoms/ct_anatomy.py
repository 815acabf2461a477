"""Procedural non-contrast chest CT anatomy in Hounsfield units.

Body outline with subcutaneous fat and chest-wall muscle, ribs, sternum and spine, two lungs
(density gradient from anterior to dependent lung) with branching vessels and airways, heart,
aorta, trachea and main bronchi, and the upper abdomen under the diaphragm domes. Everything is
placed in millimetres (see ``ct_geometry``) from a few per-patient body parameters, so the same
patient renders the same anatomy at any grid size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radlens.phantoms.ct_geometry import Grid, ball, paint, tube

# Tissue label of every voxel (the truth the HU tests check against).
TISSUES: dict[str, int] = {
    "air": 0, "fat": 1, "muscle": 2, "lung": 3, "heart": 4, "vessel": 5,
    "bone": 6, "airway": 7, "abdomen": 8, "other": 9,  # other: discs, cord, esophagus
}
# Nominal HU of each tissue in a non-contrast scan.
HU = {
    "air": -1000.0, "fat": -100.0, "muscle": 45.0, "lung": -855.0, "blood": 40.0,
    "cancellous": 420.0, "cortical": 900.0, "liver": 58.0, "spleen": 45.0, "cord": 30.0,
}


@dataclass(frozen=True)
class Body:
    """Per-patient body habitus (mm), drawn once and shared by all of a patient's scans."""

    half_width: float
    half_depth: float
    fat: float
    muscle: float
    apex: float
    dome: float
    heart: float

    @classmethod
    def sample(cls, rng: np.random.Generator, sex: str) -> Body:
        fat = rng.uniform(10, 30) if sex == "F" else rng.uniform(6, 24)
        return cls(
            half_width=float(rng.uniform(138, 162)),
            half_depth=float(rng.uniform(96, 116)),
            fat=float(fat),
            muscle=float(rng.uniform(8, 14)),
            apex=float(rng.uniform(100, 118)),
            dome=float(rng.uniform(-72, -55)),
            heart=float(rng.uniform(0.93, 1.07)),
        )


@dataclass
class Thorax:
    """A rendered thorax plus the landmarks findings are placed against."""

    grid: Grid
    hu: np.ndarray
    tissue: np.ndarray
    lung_right: np.ndarray  # pleural space of each lung, vessels and airways inside included
    lung_left: np.ndarray
    cavity: tuple[float, float]
    heart_centre: np.ndarray
    heart_radii: np.ndarray
    aorta: np.ndarray
    aorta_radius: float
    carina: np.ndarray
    hila: dict[str, np.ndarray]
    sternum_y: float
    pericardium: np.ndarray  # pericardial fluid rim (empty without pericardial effusion)
    pericardial_mm: float

    @property
    def lungs(self) -> np.ndarray:
        return self.lung_right | self.lung_left

    def lung(self, side: str) -> np.ndarray:
        return self.lung_right if side == "right" else self.lung_left


def _set(th_hu: np.ndarray, tissue: np.ndarray, mask: np.ndarray, value: float, label: str) -> None:
    th_hu[mask] = value
    tissue[mask] = TISSUES[label]


def _aorta_centreline(heart_c: np.ndarray, heart_r: np.ndarray, spine_y: float, arch_z: float, bottom: float) -> np.ndarray:
    """Ascending aorta from the heart, arch over to the left, descending beside the spine."""
    asc = np.array([8.0, heart_c[1] - 5.0, heart_c[2] + 0.5 * heart_r[2]])
    desc_xy = np.array([-22.0, spine_y + 28.0])
    t = np.linspace(0, np.pi, 9)
    mid = (asc[:2] + desc_xy) / 2
    arch = np.stack([
        mid[0] + (asc[0] - mid[0]) * np.cos(t),
        mid[1] + (asc[1] - mid[1]) * np.cos(t),
        arch_z + 18.0 * np.sin(t),
    ], axis=1)
    points = [asc, *arch, np.array([desc_xy[0], desc_xy[1], bottom])]
    return np.asarray(points, np.float32)


def _tree(
    rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, radius: float, length: float, depth: int
) -> list[tuple[np.ndarray, np.ndarray, float, int]]:
    """Branching segments ``(p0, p1, radius, generation)`` of a random vessel tree."""
    segments = []
    stack = [(root, direction / np.linalg.norm(direction), radius, length, 0)]
    while stack:
        p0, d, r, ln, gen = stack.pop()
        p1 = p0 + d * ln
        segments.append((p0, p1, r, gen))
        if gen + 1 >= depth:
            continue
        for _ in range(2):
            nd = d + rng.normal(0, 0.55, 3)
            stack.append((p1, nd / np.linalg.norm(nd), r * 0.72, ln * 0.8, gen + 1))
    return segments


def build_thorax(
    grid: Grid, body: Body, rng: np.random.Generator, heart_scale: float = 1.0, pericardial_mm: float = 0.0, z_shift: float = 0.0
) -> Thorax:
    """Render the thorax of ``body``; ``heart_scale`` > 1 enlarges the heart (cardiomegaly) and
    ``pericardial_mm`` > 0 adds a pericardial fluid rim that thick. ``z_shift`` moves the
    patient along the table (a second scan is never positioned identically)."""
    x, y, z = grid.coords()
    z = z - np.float32(z_shift)
    hu = np.full(grid.shape, HU["air"], np.float32)
    tissue = np.zeros(grid.shape, np.uint8)
    a, b = body.half_width, body.half_depth
    ones = np.ones(grid.shape, bool)

    def inside(ax: float, bx: float) -> np.ndarray:
        return ((x / ax) ** 2 + (y / bx) ** 2 <= 1.0) & ones

    _set(hu, tissue, inside(a, b), HU["fat"], "fat")
    _set(hu, tissue, inside(a - body.fat, b - body.fat), HU["muscle"], "muscle")
    ca, cb = a - body.fat - body.muscle, b - body.fat - body.muscle
    cavity = inside(ca, cb)
    _set(hu, tissue, cavity, HU["fat"] + 10, "fat")

    # Ribs: bands in the chest wall, sloping down anteriorly, open at the front (cartilage).
    rho = np.sqrt((x / ca) ** 2 + (y / cb) ** 2)
    band = (rho >= 1.0) & (rho <= 1.0 + 9.0 / cb) & ~((np.abs(x) < 35) & (y > 0))
    rib_z = np.arange(-150.0, body.apex + 10, 27.0)
    phase = 22.0 * (y / cb + 1) / 2
    ribs = np.zeros(grid.shape, bool)
    for z0 in rib_z:
        ribs |= band & (np.abs(z - (z0 - phase)) < 4.5)
    _set(hu, tissue, ribs, HU["cortical"] * 0.8, "bone")
    sternum_y = cb - 6.0
    sternum = (np.abs(x) < 14) & (np.abs(y - sternum_y) < 6) & (z > body.dome - 10) & ones
    _set(hu, tissue, sternum, HU["cancellous"] + 150, "bone")

    # Diaphragm domes (right higher: liver) and the upper abdomen below them.
    dome = body.dome + np.where(x > 0, 10.0, 0.0) - 0.006 * ((np.abs(x) - 60) ** 2 + (y - 10) ** 2)
    below = cavity & (z < dome)
    _set(hu, tissue, below, HU["spleen"], "abdomen")
    _set(hu, tissue, below & (x > -25), HU["liver"], "abdomen")
    paint(hu, ball(grid, np.array([-70.0, 15.0, body.dome - 22 + z_shift]), 16.0), HU["air"], where=below & (x < -25))

    # Spine: vertebral body (cortex + cancellous) with discs, canal with cord, posterior arch.
    spine_y = -cb + 12.0
    r_vb = np.sqrt(x**2 + (y - spine_y) ** 2)
    disc = np.abs(((z + 5.0) % 27.0) - 13.5) < 2.0
    _set(hu, tissue, (r_vb < 17) & ~disc, HU["cortical"], "bone")
    _set(hu, tissue, (r_vb < 14) & ~disc, HU["cancellous"], "bone")
    _set(hu, tissue, (r_vb < 17) & disc, HU["muscle"] + 40, "other")
    canal_y = spine_y - 27.0
    r_c = np.sqrt(x**2 + (y - canal_y) ** 2)
    arch = ((r_c >= 8) & (r_c < 15)) | ((np.abs(x) < 5) & (y < canal_y) & (y > canal_y - 32))
    arch |= (np.abs(x) < 4) & (y < spine_y) & (y > canal_y)
    _set(hu, tissue, arch & ~(r_c < 8) & (tissue > 0), HU["cortical"] * 0.8, "bone")
    _set(hu, tissue, (r_c < 8) & ones, HU["cord"], "other")

    # Heart (+ pericardial fluid rim), aorta, trachea and main bronchi, esophagus.
    heart_c = np.array([-18.0, 0.30 * cb, body.dome + 48.0 + z_shift], np.float32)
    heart_r = np.array([48.0 * heart_scale, 42.0 * (1 + (heart_scale - 1) * 0.5), 46.0 * (1 + (heart_scale - 1) * 0.4)]) * body.heart
    rim = pericardial_mm
    peri_occ = ball(grid, heart_c, heart_r + rim)
    pericardium = paint(hu, peri_occ, 8.0, where=cavity) if rim > 0 else np.zeros(grid.shape, bool)
    heart = paint(hu, ball(grid, heart_c, heart_r), HU["blood"], where=cavity)
    pericardium &= ~heart
    tissue[heart | pericardium] = TISSUES["heart"]

    carina = np.array([0.0, spine_y + 45.0, body.apex - 75.0 + z_shift], np.float32)
    aorta = _aorta_centreline(heart_c, heart_r / heart_scale, spine_y, carina[2] + 25.0, -250.0)
    aorta_r = 13.0
    vessels = np.zeros(grid.shape, bool)
    for p0, p1 in zip(aorta[:-1], aorta[1:]):
        vessels |= paint(hu, tube(grid, p0, p1, aorta_r), HU["blood"], where=cavity & ~heart & (z >= dome))
    tissue[vessels] = TISSUES["vessel"]
    top = np.array([0.0, carina[1], 400.0])
    paint(hu, tube(grid, top, carina, 11.0), HU["muscle"])
    airway = paint(hu, tube(grid, top, carina, 8.5), HU["air"])
    esophagus = paint(hu, tube(grid, top - [0, 16, 0], carina - [0, 16, 120], 7.0), HU["muscle"], where=cavity & (tissue == TISSUES["fat"]))
    tissue[esophagus] = TISSUES["other"]
    hila = {side: np.array([s * 52.0, carina[1] + 4.0, carina[2] - 30.0], np.float32) for side, s in (("right", 1), ("left", -1))}
    for h in hila.values():
        paint(hu, tube(grid, carina, h, 8.5), HU["muscle"])
        airway |= paint(hu, tube(grid, carina, h, 6.5), HU["air"])
    tissue[airway] = TISSUES["airway"]

    # Lungs: the pleural cavity minus mediastinum, above the domes and below the apices.
    margin = 1.0 - 5.0 / cb
    apex = body.apex + z_shift - 0.005 * ((np.abs(x) - 60) ** 2 + (y + 5) ** 2)
    in_cavity = ((x / ca) ** 2 + (y / cb) ** 2 <= margin**2) & (z > dome) & (z < apex)
    mediastinum = ball(grid, heart_c, heart_r + rim + 6.0)
    med = np.zeros(grid.shape, bool)
    if mediastinum is not None:
        med[mediastinum[0]] = mediastinum[1] > 0.0
    med |= (np.abs(x) < 20 + 8 * (y > spine_y + 25)) & (y > spine_y - 20)
    med |= (np.abs(x) < 38) & (y < spine_y + 22)
    for p0, p1 in zip(aorta[:-1], aorta[1:]):
        t = tube(grid, p0, p1, aorta_r + 6.0)
        if t is not None:
            med[t[0]] |= t[1] > 0.0
    lungs = in_cavity & ~med
    tissue[lungs] = TISSUES["lung"]
    hu[lungs] = np.broadcast_to(HU["lung"] - 25.0 * y / cb, grid.shape)[lungs]  # dependent lung denser

    # Pulmonary arteries from the heart to each hilum, then a vessel tree and airways per lung.
    pa_root = heart_c + np.array([0.0, 0.0, 0.8 * heart_r[2]])
    for side, h in hila.items():
        paint(hu, tube(grid, pa_root, h + [0, 8, 0], 9.0), HU["blood"], where=cavity & (tissue == TISSUES["fat"]))
        centre = np.array([(1 if side == "right" else -1) * 0.55 * ca, -0.1 * cb, carina[2] - 40.0])
        for tree in range(4):
            root = h + rng.normal(0, 4, 3)
            aim = centre + [0.0, rng.uniform(-40, 40), (tree - 1.5) * 45.0] - root
            for p0, p1, r, gen in _tree(rng, root, aim, 6.0, 36.0, 5):
                tissue[paint(hu, tube(grid, p0, p1, r), HU["blood"], where=lungs) & lungs] = TISSUES["vessel"]
                if tree == 0 and gen < 2:
                    off = np.cross(p1 - p0, [0.0, 0.0, 1.0])
                    off = off / (np.linalg.norm(off) + 1e-6) * (r + 4.0)
                    paint(hu, tube(grid, p0 + off, p1 + off, 0.8 * r), HU["air"], where=lungs)
    lung_right = lungs & (x > 0)
    lung_left = lungs & (x < 0)
    return Thorax(
        grid=grid, hu=hu, tissue=tissue, lung_right=lung_right, lung_left=lung_left,
        cavity=(ca, cb), heart_centre=heart_c, heart_radii=heart_r, aorta=aorta,
        aorta_radius=aorta_r, carina=carina, hila=hila, sternum_y=sternum_y, pericardium=pericardium, pericardial_mm=rim,
    )


def cardiothoracic_ratio(tissue: np.ndarray) -> float:
    """Left-right extent of the heart over that of the lungs (> 0.5 reads as cardiomegaly)."""

    def width(mask: np.ndarray) -> int:
        xs = np.nonzero(mask.any(axis=(1, 2)))[0]
        return int(np.ptp(xs)) + 1 if xs.size else 0

    return width(tissue == TISSUES["heart"]) / max(width(tissue == TISSUES["lung"]), 1)
