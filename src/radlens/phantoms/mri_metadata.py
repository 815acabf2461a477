"""Scanner identity and dcm2niix-style sidecars, with the messiness real archives have.

The true parameters always go to ``truth.csv``; the sidecar is what a converter would have
written, where fields go missing, SeriesDescriptions are wrong or say nothing, vendors spell their
own name several ways, and multi-valued fields are sometimes joined into one string (dcm2niix
writes ``"SE_IR"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radlens.phantoms.mri_physics import FAMILIES, Protocol

# Canonical Manufacturer first, then spellings seen in real headers.
VENDOR_NAMES = {
    "Siemens": ("SIEMENS", "Siemens", "Siemens Healthineers", "SIEMENS HEALTHINEERS"),
    "GE": ("GE MEDICAL SYSTEMS", "GE", "GE HealthCare", "ge medical systems"),
    "Philips": ("Philips Medical Systems", "Philips", "Philips Healthcare", "PHILIPS"),
}
MODELS = {
    "Siemens": {1.5: ("Avanto", "Aera", "Avanto_fit"), 3.0: ("Skyra", "Prisma_fit", "Verio", "TrioTim")},
    "GE": {1.5: ("Signa HDxt", "Optima MR450w"), 3.0: ("DISCOVERY MR750", "SIGNA Premier")},
    "Philips": {1.5: ("Ingenia", "Achieva"), 3.0: ("Ingenia", "Achieva dStream")},
}
# SeriesDescription templates per vendor and family; {p} is the vendor's plane token.
DESCRIPTIONS = {
    "Siemens": {"T1_SE": "t1_se_{p}", "T2_FSE": "t2_tse_{p}", "PD_FSE": "pd_tse_{p}",
                "FLAIR": "t2_tirm_{p}_dark-fluid", "STIR": "t2_tirm_{p}_stir", "T2STAR_GRE": "t2_fl2d_{p}_hemo",
                "T1_GRE3D": "t1_fl3d_{p}", "MPRAGE": "t1_mprage_{p}_iso"},
    "GE": {"T1_SE": "{p} T1 SE", "T2_FSE": "{p} T2 FSE", "PD_FSE": "{p} PD FSE", "FLAIR": "{p} T2 FLAIR",
           "STIR": "{p} STIR", "T2STAR_GRE": "{p} T2* GRE", "T1_GRE3D": "{p} 3D SPGR", "MPRAGE": "{p} 3D BRAVO"},
    "Philips": {"T1_SE": "T1W_SE_{p}", "T2_FSE": "T2W_TSE_{p}", "PD_FSE": "PDW_TSE_{p}", "FLAIR": "T2W_FLAIR_{p}",
                "STIR": "STIR_{p}", "T2STAR_GRE": "T2*W_FFE_{p}", "T1_GRE3D": "T1W_3D_FFE_{p}",
                "MPRAGE": "3D_T1W_TFE_{p}"},
}
PLANE_TOKENS = {
    "Siemens": {"axial": "tra", "coronal": "cor", "sagittal": "sag"},
    "GE": {"axial": "AX", "coronal": "COR", "sagittal": "SAG"},
    "Philips": {"axial": "TRA", "coronal": "COR", "sagittal": "SAG"},
}
AMBIGUOUS = ("MR BRAIN", "Series {n}", "routine brain", "WIP", "{p}", "3D", "SE", "head", "unnamed")
# Every field a sidecar may lose to messiness (InversionTime exists only for IR families).
SIDECAR_FIELDS = ("EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength",
                  "Manufacturer", "ManufacturersModelName", "SeriesDescription", "ScanningSequence",
                  "SequenceVariant", "MRAcquisitionType", "SliceThickness")


@dataclass(frozen=True)
class Scanner:
    """The scanner a session ran on."""

    vendor: str
    model: str
    field_strength: float

    @property
    def manufacturer(self) -> str:
        return VENDOR_NAMES[self.vendor][0]


@dataclass(frozen=True)
class MessinessRates:
    """How often a sidecar field goes missing, a description is wrong/ambiguous, a name or list is non-canonical.

    Attributes:
        missing_field: chance that each optional sidecar field is left out.
        wrong_description: chance that SeriesDescription names another contrast.
        ambiguous_description: chance that SeriesDescription names no contrast at all.
        vendor_variant: chance that a vendor or model name is written in a variant spelling.
        joined_list: chance that a list field (ScanningSequence, ...) is written as one joined string.
    """

    missing_field: float = 0.05
    wrong_description: float = 0.05
    ambiguous_description: float = 0.10
    vendor_variant: float = 0.25
    joined_list: float = 0.15


def draw_scanner(rng: np.random.Generator, field_strengths: tuple[float, ...]) -> Scanner:
    """A random vendor, a field strength from those allowed, and a model that exists at that strength."""
    vendor = str(rng.choice(sorted(VENDOR_NAMES)))
    field = float(rng.choice(field_strengths))
    models = MODELS[vendor][min(MODELS[vendor], key=lambda b: abs(b - field))]
    return Scanner(vendor, str(rng.choice(models)), field)


def description(vendor: str, family: str, plane: str) -> str:
    """The vendor's usual SeriesDescription for a family in a plane."""
    return DESCRIPTIONS[vendor][family].format(p=PLANE_TOKENS[vendor][plane])


def _messy_description(scanner: Scanner, family: str, plane: str, number: int, rng: np.random.Generator,
                       rates: MessinessRates) -> tuple[str, str]:
    """(SeriesDescription as written, status: "correct" / "wrong" / "ambiguous")."""
    u = rng.random()
    if u < rates.wrong_description:
        others = [f for f in FAMILIES if FAMILIES[f].contrast != FAMILIES[family].contrast]
        return description(scanner.vendor, str(rng.choice(others)), plane), "wrong"
    if u < rates.wrong_description + rates.ambiguous_description:
        text = str(rng.choice(AMBIGUOUS)).format(n=number, p=PLANE_TOKENS[scanner.vendor][plane])
        return text, "ambiguous"
    return description(scanner.vendor, family, plane), "correct"


def true_values(protocol: Protocol, scanner: Scanner, plane: str, thickness: float) -> dict[str, Any]:
    """The sidecar's fields with their true values (seconds, degrees, tesla, mm), before messiness."""
    spec = protocol.spec
    return {
        "EchoTime": round(protocol.te / 1000.0, 5),
        "RepetitionTime": round(protocol.tr / 1000.0, 5),
        "InversionTime": None if protocol.ti is None else round(protocol.ti / 1000.0, 5),
        "FlipAngle": protocol.flip,
        "MagneticFieldStrength": scanner.field_strength,
        "Manufacturer": scanner.manufacturer,
        "ManufacturersModelName": scanner.model,
        "SeriesDescription": description(scanner.vendor, protocol.family, plane),
        "ScanningSequence": list(spec.scanning_sequence),
        "SequenceVariant": list(spec.sequence_variant),
        "MRAcquisitionType": spec.acquisition,
        "SliceThickness": round(thickness, 3),
    }


def make_sidecar(protocol: Protocol, scanner: Scanner, plane: str, thickness: float, number: int,
                 rng: np.random.Generator, rates: MessinessRates) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sidecar JSON dict, notes for truth.csv: description_status, missing_fields, Manufacturer written)."""
    values = true_values(protocol, scanner, plane, thickness)
    values["SeriesDescription"], status = _messy_description(scanner, protocol.family, plane, number, rng, rates)
    if rng.random() < rates.vendor_variant:
        values["Manufacturer"] = str(rng.choice(VENDOR_NAMES[scanner.vendor][1:]))
    joined = rng.random() < rates.joined_list
    missing = [k for k in SIDECAR_FIELDS if rng.random() < rates.missing_field and values[k] is not None]
    sidecar: dict[str, Any] = {"Modality": "MR", "ConversionSoftware": "radlens phantom mri", "SeriesNumber": number}
    for key in SIDECAR_FIELDS:
        value = values[key]
        if key in missing or value is None:
            continue
        if joined and isinstance(value, list):
            value = "_".join(value)
        sidecar[key] = value
    notes = {"description_status": status, "missing_fields": ";".join(missing),
             "SeriesDescription": values["SeriesDescription"], "ManufacturerWritten": values["Manufacturer"]}
    return sidecar, notes
