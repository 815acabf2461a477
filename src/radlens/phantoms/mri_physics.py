"""MR contrast from physics: tissue relaxation times and the signal equations of common sequences.

Each series' image is ``sum over tissues of (tissue fraction x tissue signal)``, where the tissue
signal comes from the sequence's steady-state signal equation evaluated at that tissue's
T1/T2/T2*/PD. No image filter decides the contrast, so changing TE, TR, TI or the flip angle
changes the image the way it would on a scanner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TISSUES = ("GM", "WM", "CSF", "lesion", "fat")

# (T1 ms, T2 ms, T2* ms, proton density relative to CSF) per tissue and field strength.
# Brain values follow Stanisz et al. 2005 (MRM 54:507), Wansapura et al. 1999 (JMRI 9:531),
# Lu et al. 2005 (MRM 53:808, CSF) and Peters et al. 2007 (MRI 25:748, T2* at 3 T); MS-lesion
# values are typical of Bakshi/Vrenken-style relaxometry (T1 ~1.5x WM, T2 ~2x WM); subcutaneous
# fat (the scalp) from Gold et al. 2004 (AJR 183:343).
RELAXATION: dict[float, dict[str, tuple[float, float, float, float]]] = {
    1.5: {
        "GM": (1124.0, 95.0, 84.0, 0.80),
        "WM": (790.0, 72.0, 66.0, 0.69),
        "CSF": (4070.0, 1800.0, 1000.0, 1.00),
        "lesion": (1300.0, 150.0, 110.0, 0.86),
        "fat": (260.0, 85.0, 40.0, 0.90),
    },
    3.0: {
        "GM": (1650.0, 99.0, 52.0, 0.80),
        "WM": (1080.0, 70.0, 45.0, 0.69),
        "CSF": (4300.0, 1700.0, 900.0, 1.00),
        "lesion": (1700.0, 140.0, 90.0, 0.86),
        "fat": (380.0, 70.0, 30.0, 0.90),
    },
}


def relaxation(field_strength: float, tissue: str) -> tuple[float, float, float, float]:
    """(T1, T2, T2*, PD) of a tissue at the tabulated field strength closest to ``field_strength``."""
    nearest = min(RELAXATION, key=lambda b: abs(b - field_strength))
    return RELAXATION[nearest][tissue]


def spin_echo(pd: float, t1: float, t2: float, te: float, tr: float) -> float:
    """Spin echo / fast spin echo (effective TE), TR >> TE: PD (1 - e^-TR/T1) e^-TE/T2."""
    return pd * (1.0 - math.exp(-tr / t1)) * math.exp(-te / t2)


def inversion_recovery(pd: float, t1: float, t2: float, te: float, tr: float, ti: float) -> float:
    """Magnitude inversion recovery with a spin-echo readout: PD |1 - 2e^-TI/T1 + e^-TR/T1| e^-TE/T2."""
    return pd * abs(1.0 - 2.0 * math.exp(-ti / t1) + math.exp(-tr / t1)) * math.exp(-te / t2)


def null_inversion_time(t1: float, tr: float) -> float:
    """TI that nulls a tissue of this T1 in :func:`inversion_recovery` (T1 ln 2 when TR >> T1)."""
    return t1 * math.log(2.0 / (1.0 + math.exp(-tr / t1)))


def spoiled_gradient_echo(pd: float, t1: float, t2s: float, te: float, tr: float, flip_deg: float) -> float:
    """Spoiled gradient echo (FLASH/SPGR) steady state: the Ernst signal times e^-TE/T2*."""
    a = math.radians(flip_deg)
    e1 = math.exp(-tr / t1)
    return pd * math.sin(a) * (1.0 - e1) / (1.0 - math.cos(a) * e1) * math.exp(-te / t2s)


def mprage(
    pd: float, t1: float, t2s: float, te: float, tr: float, ti: float, flip_deg: float, echoes: int = 128
) -> float:
    """MPRAGE-like inversion-prepared gradient echo, by stepping the longitudinal magnetisation.

    ``tr`` is the inversion-to-inversion time and ``ti`` the time from inversion to the centre of a
    linear readout of ``echoes`` small-flip gradient echoes spaced ``2 TE + 2`` ms. No simple closed
    form covers the readout's saturation, so the magnetisation is stepped through a few
    repetitions to its steady state and read at the centre echo.
    """
    a = math.radians(flip_deg)
    esp = 2.0 * te + 2.0
    start = max(ti - esp * echoes / 2.0, 0.0)
    rest = max(tr - start - esp * echoes, 0.0)
    mz, centre = 1.0, 0.0
    for _ in range(4):
        mz = -mz
        mz = 1.0 - (1.0 - mz) * math.exp(-start / t1)
        for n in range(echoes):
            if n == echoes // 2:
                centre = mz * math.sin(a)
            mz = 1.0 - (1.0 - mz * math.cos(a)) * math.exp(-esp / t1)
        mz = 1.0 - (1.0 - mz) * math.exp(-rest / t1)
    return pd * abs(centre) * math.exp(-te / t2s)


@dataclass(frozen=True)
class Family:
    """A sequence family: its signal equation, DICOM sequence codes and clinical parameter ranges (ms, deg)."""

    contrast: str
    equation: str  # "se", "ir", "gre" or "mprage"
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    acquisition: str  # "2D" or "3D"
    te: tuple[float, float]
    tr: tuple[float, float]
    flip: tuple[float, float] = (90.0, 90.0)
    null_tissue: str | None = None  # IR families: TI chosen near this tissue's null point
    ti: tuple[float, float] | None = None  # MPRAGE: TI range


FAMILIES: dict[str, Family] = {
    "T1_SE": Family("T1w", "se", ("SE",), ("SK", "SP"), "2D", (8.0, 20.0), (400.0, 750.0)),
    "T2_FSE": Family("T2w", "se", ("SE",), ("SK", "SP", "OSP"), "2D", (80.0, 160.0), (3000.0, 7000.0)),
    "PD_FSE": Family("PDw", "se", ("SE",), ("SK", "SP", "OSP"), "2D", (10.0, 35.0), (2000.0, 4500.0)),
    "FLAIR": Family("FLAIR", "ir", ("SE", "IR"), ("SK", "SP", "MP"), "2D", (80.0, 150.0), (6000.0, 10000.0),
                    null_tissue="CSF"),
    "STIR": Family("STIR", "ir", ("SE", "IR"), ("SK", "SP", "MP"), "2D", (30.0, 70.0), (3000.0, 6000.0),
                   null_tissue="fat"),
    "T2STAR_GRE": Family("T2*w", "gre", ("GR",), ("SP",), "2D", (15.0, 40.0), (400.0, 900.0), (15.0, 25.0)),
    "T1_GRE3D": Family("T1w", "gre", ("GR",), ("SP",), "3D", (2.0, 6.0), (8.0, 25.0), (15.0, 30.0)),
    "MPRAGE": Family("T1w", "mprage", ("GR", "IR"), ("SK", "SP", "MP"), "3D", (2.0, 4.5), (1800.0, 2500.0),
                     (7.0, 12.0), ti=(750.0, 1100.0)),
}


@dataclass(frozen=True)
class Protocol:
    """The true acquisition parameters of one series (times in ms, flip in degrees)."""

    family: str
    field_strength: float
    te: float
    tr: float
    ti: float | None
    flip: float

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]


def sample_protocol(family: str, field_strength: float, rng: np.random.Generator) -> Protocol:
    """Draw TE/TR/TI/flip uniformly from the family's clinical ranges (IR: TI within 2% of the null point)."""
    spec = FAMILIES[family]
    te = round(float(rng.uniform(*spec.te)), 2)
    tr = round(float(rng.uniform(*spec.tr)), 1)
    flip = round(float(rng.uniform(*spec.flip)))
    ti: float | None = None
    if spec.null_tissue is not None:
        t1 = relaxation(field_strength, spec.null_tissue)[0]
        ti = round(null_inversion_time(t1, tr) * float(rng.uniform(0.98, 1.02)), 1)
    elif spec.ti is not None:
        ti = round(float(rng.uniform(*spec.ti)), 1)
    return Protocol(family, field_strength, te, tr, ti, float(flip))


def tissue_signal(protocol: Protocol, tissue: str) -> float:
    """Noise-free signal of one pure tissue under a protocol."""
    t1, t2, t2s, pd = relaxation(protocol.field_strength, tissue)
    p, eq = protocol, protocol.spec.equation
    if eq == "se":
        return spin_echo(pd, t1, t2, p.te, p.tr)
    if eq == "ir":
        return inversion_recovery(pd, t1, t2, p.te, p.tr, float(p.ti or 0.0))
    if eq == "gre":
        return spoiled_gradient_echo(pd, t1, t2s, p.te, p.tr, p.flip)
    return mprage(pd, t1, t2s, p.te, p.tr, float(p.ti or 0.0), p.flip)


def tissue_signals(protocol: Protocol) -> dict[str, float]:
    """Signal of every tissue in :data:`TISSUES` under a protocol."""
    return {t: tissue_signal(protocol, t) for t in TISSUES}
