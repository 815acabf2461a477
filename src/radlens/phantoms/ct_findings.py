"""CT-RATE's 18 findings: which a scan has (prevalence, co-occurrence) and how each is drawn.

``sample_findings`` draws present/absent per finding with a logistic model around the
configured prevalence: calcifications, emphysema and cardiomegaly grow with age, effusion
brings atelectasis, cardiomegaly brings effusions, and so on. ``draw_findings`` changes the
HU of a rendered thorax and returns a label map (label id = 1 + index in ``FINDINGS``) plus
the details (side, lobe, size) the report is written from. Every finding is drawn large and dense
enough to stay visible after resampling to a coarse 5 mm training grid (nodules at least 7 mm in
radius, emphysema over a sizeable share of the upper lobes), so that a small model trained for
minutes on a few hundred phantom scans can learn it; real CT-RATE findings are far subtler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radlens.phantoms.ct_anatomy import TISSUES, Thorax
from radlens.phantoms.ct_geometry import ball, paint, tube

FINDINGS: tuple[str, ...] = (
    "Medical material", "Arterial wall calcification", "Cardiomegaly", "Pericardial effusion",
    "Coronary artery wall calcification", "Hiatal hernia", "Lymphadenopathy", "Emphysema",
    "Atelectasis", "Lung nodule", "Lung opacity", "Pulmonary fibrotic sequela", "Pleural effusion",
    "Mosaic attenuation pattern", "Peribronchial thickening", "Consolidation", "Bronchiectasis",
    "Interlobular septal thickening",
)
LABEL_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(FINDINGS)}

# Findings the phantom draws, with their default prevalence; the other six are always 0.
DEFAULT_PREVALENCES: dict[str, float] = {
    "Medical material": 0.12, "Arterial wall calcification": 0.30, "Cardiomegaly": 0.15,
    "Pericardial effusion": 0.10, "Coronary artery wall calcification": 0.28,
    "Lymphadenopathy": 0.22, "Emphysema": 0.22, "Atelectasis": 0.25, "Lung nodule": 0.35,
    "Lung opacity": 0.28, "Pleural effusion": 0.15, "Consolidation": 0.18,
}
IMPLEMENTED: tuple[str, ...] = tuple(f for f in FINDINGS if f in DEFAULT_PREVALENCES)
# Findings that stay from one scan of a patient to the next; the others are drawn afresh.
CHRONIC = ("Medical material", "Arterial wall calcification", "Coronary artery wall calcification", "Emphysema", "Cardiomegaly")


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


def sample_findings(
    rng: np.random.Generator,
    age: float,
    prevalences: dict[str, float],
    previous: dict[str, int] | None = None,
) -> dict[str, int]:
    """Present (1) / absent (0) for all 18 findings; ``previous`` keeps a patient's chronic ones."""
    out = {name: 0 for name in FINDINGS}
    a = (age - 60.0) / 10.0

    def draw(name: str, shift: float = 0.0) -> int:
        if previous is not None and name in CHRONIC:
            return previous[name]
        p = prevalences.get(name, 0.0)
        if p <= 0:
            return 0
        return int(rng.random() < 1 / (1 + np.exp(-(_logit(p) + shift))))

    out["Arterial wall calcification"] = draw("Arterial wall calcification", 0.9 * a)
    out["Coronary artery wall calcification"] = draw(
        "Coronary artery wall calcification", 0.7 * a + (1.5 if out["Arterial wall calcification"] else -0.6))
    out["Emphysema"] = draw("Emphysema", 0.5 * a)
    out["Cardiomegaly"] = draw("Cardiomegaly", 0.5 * a)
    cm = out["Cardiomegaly"]
    out["Pericardial effusion"] = draw("Pericardial effusion", 1.2 if cm else -0.3)
    out["Pleural effusion"] = draw("Pleural effusion", 1.3 if cm else -0.3)
    out["Atelectasis"] = draw("Atelectasis", 2.5 if out["Pleural effusion"] else -0.5)
    out["Consolidation"] = draw("Consolidation", 0.8 if out["Pleural effusion"] else -0.2)
    out["Lung nodule"] = draw("Lung nodule", 0.5 if out["Emphysema"] else -0.1)
    out["Lung opacity"] = draw("Lung opacity", 1.0 if out["Consolidation"] else -0.2)
    out["Lymphadenopathy"] = draw("Lymphadenopathy", 1.0 if out["Consolidation"] or out["Lung nodule"] else -0.4)
    out["Medical material"] = draw("Medical material", 0.4 * a + (1.2 if cm else 0.0))
    return out


def heart_shape(rng: np.random.Generator, findings: dict[str, int]) -> tuple[float, float]:
    """Heart scale and pericardial rim (mm) that ``build_thorax`` needs for these findings."""
    scale = float(rng.uniform(1.28, 1.42)) if findings["Cardiomegaly"] else 1.0
    rim = float(rng.uniform(8.0, 14.0)) if findings["Pericardial effusion"] else 0.0
    return scale, rim


class _Painter:
    """Draws findings into one thorax, keeping their masks disjoint in one label map."""

    def __init__(self, th: Thorax, rng: np.random.Generator) -> None:
        from scipy.ndimage import distance_transform_edt

        self.th, self.rng, self.g = th, rng, th.grid
        self.labels = np.zeros(th.hu.shape, np.uint8)
        self.depth = distance_transform_edt(th.lungs, sampling=self.g.spacing).astype(np.float32)
        self.big = 2.0 * max(self.g.spacing[:2])  # smallest radius that stays visible

    def free_lung(self) -> np.ndarray:
        return (self.th.tissue == TISSUES["lung"]) & (self.labels == 0)

    def mark(self, name: str, mask: np.ndarray) -> int:
        self.labels[mask] = LABEL_IDS[name]
        return int(mask.sum())

    def spot(self, where: np.ndarray, min_depth: float) -> np.ndarray:
        """A random voxel centre (mm) of ``where`` at least ``min_depth`` mm inside the lungs."""
        ok = where & (self.depth >= min_depth)
        if not ok.any():
            ok = where if where.any() else self.th.lungs
        idx = np.argwhere(ok)
        return self.g.to_mm(idx[self.rng.integers(len(idx))]).astype(np.float32)

    def zone(self, side: str, upper: bool | None) -> np.ndarray:
        z = self.g.coords()[2]
        lung = self.free_lung() & self.th.lung(side)
        if upper is None:
            return lung
        cut = self.th.carina[2] - 30.0
        return lung & ((z > cut) if upper else (z <= cut))

    def lobe(self, side: str, p: np.ndarray) -> str:
        if p[2] > self.th.carina[2] - 30.0:
            return f"{side} upper lobe"
        if side == "right" and p[1] > 0.1 * self.th.cavity[1] and p[2] > self.th.carina[2] - 75.0:
            return "right middle lobe"
        return f"{side} lower lobe"

    def sides(self, both_p: float) -> list[str]:
        if self.rng.random() < both_p:
            return ["right", "left"]
        return [str(self.rng.choice(["right", "left"]))]

    def pleural_effusion(self, with_atelectasis: bool) -> dict[str, Any]:
        """Dependent fluid layer filling the posterior lung bases, tapering upwards."""
        x, y, z = self.g.coords()
        sides = self.sides(0.45)
        depth = float(self.rng.uniform(18.0, 42.0))
        top = float(np.percentile(self.g.to_mm(np.argwhere(self.th.lungs))[:, 2], 55))
        region = self.th.lungs & (self.labels == 0) & np.isin(self.th.tissue, [TISSUES["lung"], TISSUES["vessel"]])
        first = np.argmax(region, axis=1)[:, None, :]  # most posterior lung row per (x, z)
        from_back = (np.arange(self.g.shape[1])[None, :, None] - first) * self.g.spacing[1]
        bottom = float(self.g.to_mm(np.argwhere(self.th.lungs))[:, 2].min())
        local = depth * np.clip((top - z) / max(top - bottom, 1.0), 0.0, 1.0) ** 0.7
        fluid = region & (from_back < local)
        band = region & (from_back >= local) & (from_back < local + 10.0) & (local > 4.0)
        side_mask = np.zeros_like(fluid)
        for s in sides:
            side_mask |= self.th.lung(s)
        fluid &= side_mask
        self.th.hu[fluid] = 8.0
        self.mark("Pleural effusion", fluid)
        if with_atelectasis:
            band &= side_mask
            self.th.hu[band] = 28.0
            self.mark("Atelectasis", band)
        return {"sides": sides, "amount": "moderate" if depth > 32 else "small"}

    def atelectasis(self) -> dict[str, Any]:
        """Plate-like (subsegmental) atelectasis: a thin dense band in a lower lobe."""
        side = str(self.rng.choice(["right", "left"]))
        c = self.spot(self.zone(side, upper=False), 8.0)
        radii = np.array([self.rng.uniform(22, 32), max(5.0, 1.4 * self.g.spacing[1]), self.rng.uniform(10, 16)])
        self.mark("Atelectasis", paint(self.th.hu, ball(self.g, c, radii), 25.0, where=self.free_lung()))
        return {"sides": [side], "kind": "plate-like", "lobe": self.lobe(side, c)}

    def cluster(self, name: str, value: float, side: str, upper: bool | None, n: int, r: tuple[float, float], spread: float) -> dict[str, Any]:
        """A few overlapping balls around one lung spot (consolidation, ground glass)."""
        c0 = self.spot(self.zone(side, upper), 10.0)
        mask = np.zeros(self.th.hu.shape, bool)
        for _ in range(n):
            c = c0 + self.rng.normal(0, spread, 3).astype(np.float32)
            mask |= paint(self.th.hu, ball(self.g, c, max(self.rng.uniform(*r), self.big)), value, where=self.free_lung() & ~mask)
        self.mark(name, mask)
        return {"side": side, "lobe": self.lobe(side, c0)}

    def emphysema(self) -> dict[str, Any]:
        """Low-attenuation (-995 HU) areas, mostly in the upper lobes."""
        mask = np.zeros(self.th.hu.shape, bool)
        for _ in range(int(self.rng.integers(16, 28))):
            side = str(self.rng.choice(["right", "left"]))
            c = self.spot(self.zone(side, upper=self.rng.random() < 0.8), 6.0)
            mask |= paint(self.th.hu, ball(self.g, c, max(self.rng.uniform(12, 20), self.big)), -995.0, where=self.free_lung())
        self.mark("Emphysema", mask)
        return {"pattern": str(self.rng.choice(["centrilobular", "paraseptal"])), "sides": ["right", "left"]}

    def nodules(self) -> dict[str, Any]:
        out = []
        for _ in range(int(self.rng.choice([1, 1, 1, 2, 3]))):
            side = str(self.rng.choice(["right", "left"]))
            r = max(float(self.rng.uniform(7.0, 13.0)), self.big)
            c = self.spot(self.zone(side, upper=None), r + 4.0)
            self.mark("Lung nodule", paint(self.th.hu, ball(self.g, c, r), float(self.rng.uniform(40, 80)), where=self.free_lung()))
            out.append({"side": side, "lobe": self.lobe(side, c), "size_mm": int(round(2 * r))})
        return {"nodules": out}

    def lymph_nodes(self) -> dict[str, Any]:
        ca, cb = self.th.carina, self.th.hila
        stations = {
            "right paratracheal": ca + [18.0, 4.0, 28.0], "subcarinal": ca + [0.0, -4.0, -24.0],
            "aortopulmonary window": ca + [-20.0, 16.0, 4.0], "right hilar": cb["right"] + [6.0, 10.0, 0.0],
            "left hilar": cb["left"] + [-6.0, 10.0, 0.0], "prevascular": ca + [0.0, 45.0, 10.0],
        }
        names = list(stations)
        chosen = [names[i] for i in self.rng.choice(len(names), int(self.rng.integers(2, 5)), replace=False)]
        soft_tissue = np.isin(self.th.tissue, [TISSUES["fat"], TISSUES["lung"]]) & (self.labels == 0)
        mask = np.zeros(self.th.hu.shape, bool)
        for name in chosen:
            r = max(float(self.rng.uniform(11.0, 16.0)), self.big)
            mask |= paint(self.th.hu, ball(self.g, stations[name], [r, r * 0.9, r * 1.3]), 55.0, where=soft_tissue)
        self.mark("Lymphadenopathy", mask)
        return {"stations": chosen, "size_mm": int(round(2 * r))}

    def plaques(self, name: str, centres: list[np.ndarray]) -> None:
        mask = np.zeros(self.th.hu.shape, bool)
        for c in centres:
            r = max(float(self.rng.uniform(4.5, 6.5)), 0.8 * self.g.voxel)
            mask |= paint(self.th.hu, ball(self.g, c, r), float(self.rng.uniform(900, 1200)))
        self.mark(name, mask)

    def aortic_calcification(self) -> dict[str, Any]:
        ao, r = self.th.aorta, self.th.aorta_radius
        centres, parts = [], set()
        for _ in range(int(self.rng.integers(6, 12))):
            i = int(self.rng.integers(3, len(ao) - 1))
            c = ao[i] + self.rng.random() * (ao[i + 1] - ao[i])
            d = np.cross(ao[i + 1] - ao[i], self.rng.normal(size=3))
            centres.append(c + r * d / np.linalg.norm(d))
            parts.add("descending aorta" if i == len(ao) - 2 else "aortic arch")
        self.plaques("Arterial wall calcification", centres)
        return {"parts": sorted(parts)}

    def coronary_calcification(self) -> dict[str, Any]:
        grooves = {"left anterior descending": np.array([-0.35, 1.0, 0.35]), "right coronary": np.array([1.0, 0.55, 0.1]),
                   "circumflex": np.array([-1.0, 0.1, 0.4])}
        names = list(grooves)
        chosen = [names[i] for i in self.rng.choice(3, int(self.rng.integers(1, 4)), replace=False)]
        centres = []
        for name in chosen:
            for _ in range(int(self.rng.integers(2, 4))):
                d = grooves[name] + self.rng.normal(0, 0.12, 3)
                d = d / np.sqrt(((d / self.th.heart_radii) ** 2).sum())  # onto the heart surface
                centres.append(self.th.heart_centre + d * 1.02)
        self.plaques("Coronary artery wall calcification", centres)
        return {"arteries": chosen}

    def device(self) -> dict[str, Any]:
        """Pacemaker with a lead into the right heart, a chest port, or sternotomy wires."""
        kind = str(self.rng.choice(["pacemaker", "port catheter", "sternotomy wires"]))
        hu, g, ca, cb = self.th.hu, self.g, self.th.carina, self.th.cavity[1]
        heart = self.th.heart_centre
        mask = np.zeros(hu.shape, bool)
        if kind == "sternotomy wires":
            for dz in np.linspace(-70, 30, 5):
                c = np.array([0.0, self.th.sternum_y + 2.0, ca[2] + dz])
                mask |= paint(hu, tube(g, c - [13, 4, 0], c + [13, 4, 0], max(2.5, 0.45 * g.voxel)), 3000.0)
        else:
            left = kind == "pacemaker"
            box = np.array([-72.0 if left else 66.0, cb + 9.0, ca[2] + 35.0])
            mask |= paint(hu, ball(g, box, [22.0, 6.0, 17.0] if left else [13.0, 7.0, 13.0]), 3000.0)
            svc = np.array([14.0, heart[1] - 10.0, ca[2] - 5.0])
            path = [box, box * [0.55, 0.6, 1.0] + [0, 0, 20.0], svc]
            if left:
                path.append(heart + [22.0, 5.0, -15.0])
            for p0, p1 in zip(path[:-1], path[1:]):
                mask |= paint(hu, tube(g, np.asarray(p0), np.asarray(p1), max(2.2, 0.45 * g.voxel)), 2500.0)
        self.mark("Medical material", mask)
        return {"kind": kind}


def draw_findings(th: Thorax, findings: dict[str, int], rng: np.random.Generator) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """Draw the present findings into ``th.hu``; return the label map and per-finding details.

    Cardiomegaly and pericardial effusion were drawn by ``build_thorax`` (see ``heart_shape``);
    here they only get their labels.
    """
    p = _Painter(th, rng)
    details: dict[str, dict[str, Any]] = {}
    if findings["Cardiomegaly"]:
        p.mark("Cardiomegaly", (th.tissue == TISSUES["heart"]) & ~th.pericardium)
        details["Cardiomegaly"] = {}
    if findings["Pericardial effusion"]:
        p.mark("Pericardial effusion", th.pericardium)
        details["Pericardial effusion"] = {"thickness_mm": int(round(th.pericardial_mm))}
    if findings["Pleural effusion"]:
        details["Pleural effusion"] = p.pleural_effusion(with_atelectasis=bool(findings["Atelectasis"]))
        if findings["Atelectasis"]:
            details["Atelectasis"] = {"sides": details["Pleural effusion"]["sides"], "kind": "compressive"}
    if findings["Atelectasis"] and "Atelectasis" not in details:
        details["Atelectasis"] = p.atelectasis()
    if findings["Emphysema"]:
        details["Emphysema"] = p.emphysema()
    if findings["Consolidation"]:
        side = str(rng.choice(["right", "left"]))
        details["Consolidation"] = p.cluster("Consolidation", 35.0, side, rng.random() < 0.3, 5, (15.0, 24.0), 12.0)
    if findings["Lung opacity"]:
        side = str(rng.choice(["right", "left"]))
        details["Lung opacity"] = p.cluster("Lung opacity", -450.0, side, None, 6, (15.0, 24.0), 18.0)
    if findings["Lung nodule"]:
        details["Lung nodule"] = p.nodules()
    if findings["Lymphadenopathy"]:
        details["Lymphadenopathy"] = p.lymph_nodes()
    if findings["Arterial wall calcification"]:
        details["Arterial wall calcification"] = p.aortic_calcification()
    if findings["Coronary artery wall calcification"]:
        details["Coronary artery wall calcification"] = p.coronary_calcification()
    if findings["Medical material"]:
        details["Medical material"] = p.device()
    return p.labels, details
