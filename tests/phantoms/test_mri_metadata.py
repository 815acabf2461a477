"""Sidecar messiness of the MRI phantom: rates, vendor spellings, joined lists."""

from __future__ import annotations

import numpy as np
import pytest

from radlens.phantoms.mri_metadata import (
    SIDECAR_FIELDS,
    VENDOR_NAMES,
    MessinessRates,
    Scanner,
    description,
    draw_scanner,
    make_sidecar,
    true_values,
)
from radlens.phantoms.mri_physics import FAMILIES, sample_protocol


def _sidecars(rates: MessinessRates, n: int = 600) -> list[tuple[dict, dict, dict]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        scanner = draw_scanner(rng, (1.5, 3.0))
        protocol = sample_protocol(list(FAMILIES)[i % len(FAMILIES)], scanner.field_strength, rng)
        sidecar, notes = make_sidecar(protocol, scanner, "axial", 4.0, i + 1, rng, rates)
        out.append((sidecar, notes, true_values(protocol, scanner, "axial", 4.0)))
    return out


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_missing_field_rate_is_near_the_configured_rate(rate: float) -> None:
    present = missing = 0
    for sidecar, notes, truth in _sidecars(MessinessRates(missing_field=rate)):
        eligible = [k for k in SIDECAR_FIELDS if truth[k] is not None]
        dropped = [k for k in eligible if k not in sidecar]
        assert dropped == [k for k in notes["missing_fields"].split(";") if k]
        missing += len(dropped)
        present += len(eligible)
    assert missing / present == pytest.approx(rate, abs=0.02)


def test_present_fields_hold_the_true_values() -> None:
    for sidecar, _notes, truth in _sidecars(MessinessRates(joined_list=0.0)):
        for key in ("EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "MagneticFieldStrength",
                    "ManufacturersModelName", "ScanningSequence", "SequenceVariant", "SliceThickness"):
            if key in sidecar:
                assert sidecar[key] == truth[key], key
        assert ("InversionTime" in truth and truth["InversionTime"] is not None) or "InversionTime" not in sidecar


def test_description_vendor_and_list_messiness_rates() -> None:
    rates = MessinessRates(missing_field=0.0, wrong_description=0.1, ambiguous_description=0.2,
                           vendor_variant=0.3, joined_list=0.25)
    rows = _sidecars(rates, n=1000)
    status = [notes["description_status"] for _, notes, _ in rows]
    assert status.count("wrong") / len(rows) == pytest.approx(0.1, abs=0.03)
    assert status.count("ambiguous") / len(rows) == pytest.approx(0.2, abs=0.03)
    for sidecar, notes, truth in rows:
        assert sidecar["SeriesDescription"] == notes["SeriesDescription"]
        if notes["description_status"] == "correct":
            assert sidecar["SeriesDescription"] == truth["SeriesDescription"]
        else:
            assert sidecar["SeriesDescription"] != truth["SeriesDescription"]
    variants = sum(s["Manufacturer"] != t["Manufacturer"] for s, _, t in rows)
    assert variants / len(rows) == pytest.approx(0.3, abs=0.04)
    assert all(any(s["Manufacturer"] in names for names in VENDOR_NAMES.values()) for s, _, _ in rows)
    joined = [s for s, _, _ in rows if isinstance(s["ScanningSequence"], str)]
    assert len(joined) / len(rows) == pytest.approx(0.25, abs=0.04)
    assert all(s["ScanningSequence"] in ("SE", "GR", "SE_IR", "GR_IR") for s in joined)


def test_vendor_descriptions_name_the_plane() -> None:
    assert description("Siemens", "FLAIR", "axial") == "t2_tirm_tra_dark-fluid"
    assert description("GE", "T2_FSE", "coronal") == "COR T2 FSE"
    assert description("Philips", "MPRAGE", "sagittal") == "3D_T1W_TFE_SAG"


def test_scanner_models_exist_at_their_field_strength() -> None:
    rng = np.random.default_rng(3)
    scanners = [draw_scanner(rng, (1.5,)) for _ in range(50)]
    assert {s.field_strength for s in scanners} == {1.5}
    assert "Prisma_fit" not in {s.model for s in scanners}
    assert Scanner("GE", "SIGNA Premier", 3.0).manufacturer == "GE MEDICAL SYSTEMS"
