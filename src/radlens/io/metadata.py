"""The typed acquisition-metadata record, the same whether it came from DICOM or a BIDS sidecar.

Times are in seconds (BIDS convention), field strength in tesla, angles in degrees.
Multi-valued DICOM/BIDS fields (ScanningSequence, SequenceVariant) are kept as tuples of
strings. A field that is absent is ``None``; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NUMERIC_FIELDS = (
    "MagneticFieldStrength",
    "SliceThickness",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "FlipAngle",
    "RescaleSlope",
    "RescaleIntercept",
)
TEXT_FIELDS = (
    "Modality",
    "Manufacturer",
    "ManufacturersModelName",
    "SeriesDescription",
    "MRAcquisitionType",
    "BodyPartExamined",
    "ConvolutionKernel",
)
LIST_FIELDS = ("ScanningSequence", "SequenceVariant")


@dataclass(frozen=True)
class AcquisitionMetadata:
    """Scanner metadata of one series, free of patient identity (see ``radlens.io.phi``)."""

    Modality: str | None = None
    Manufacturer: str | None = None
    ManufacturersModelName: str | None = None
    MagneticFieldStrength: float | None = None
    SeriesDescription: str | None = None
    ScanningSequence: tuple[str, ...] | None = None
    SequenceVariant: tuple[str, ...] | None = None
    MRAcquisitionType: str | None = None
    SliceThickness: float | None = None
    EchoTime: float | None = None
    RepetitionTime: float | None = None
    InversionTime: float | None = None
    FlipAngle: float | None = None
    RescaleSlope: float | None = None
    RescaleIntercept: float | None = None
    BodyPartExamined: str | None = None
    ConvolutionKernel: str | None = None
    # Non-identifying extras a reader chose to keep (already PHI-filtered).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of the typed fields (lists for tuples), for tables and JSON."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> AcquisitionMetadata:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")


def is_missing(value: Any) -> bool:
    """True for None, NaN, empty strings and empty sequences."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, (str, tuple, list)) and len(value) == 0:
        return True
    return False
