"""Captions: MR-CLIP's exact text by default, custom templates, formatting rules, field dropout."""

from __future__ import annotations

import numpy as np
import pytest

from radlens.errors import ConfigError
from radlens.io.metadata import AcquisitionMetadata
from radlens.prepare.captions import (
    FIELD_NAMES,
    NONE,
    CaptionConfig,
    caption_fields,
    drop_fields,
    format_number,
    make_caption,
    render,
)

# A dcm2niix sidecar's values (T2 TSE on a Vida), typed as radlens reads them.
T2 = AcquisitionMetadata(
    Modality="MR",
    Manufacturer="Siemens",
    ManufacturersModelName="MAGNETOM_Vida",
    MagneticFieldStrength=3.0,
    SeriesDescription="t2_tse_tra",
    ScanningSequence=("SE",),
    SequenceVariant=("SK", "SP"),
    MRAcquisitionType="2D",
    SliceThickness=5.0,
    EchoTime=0.08,
    RepetitionTime=4.5,
    FlipAngle=90.0,
)
FLAIR = AcquisitionMetadata(
    Manufacturer="GE",
    ManufacturersModelName="DISCOVERY MR750",
    MagneticFieldStrength=1.5,
    SeriesDescription="Sag FLAIR",
    ScanningSequence=("SE", "IR"),
    SequenceVariant=("SK", "SS", "MP"),
    EchoTime=0.1254,
    RepetitionTime=6.0,
    InversionTime=1.8,
    FlipAngle=90.0,
)


def test_default_caption_is_mrclip_text_character_for_character() -> None:
    # What MR-CLIP's preprocessing writes for the same sidecars.
    assert make_caption(T2, "axial") == (
        "A brain MRI, plane axial, Scanner (Manufacturer, Model, Field Strength): (Siemens, MAGNETOM_Vida, 3), "
        "Acquisition (Description, Sequence, Variant): (t2_tse_tra, SE, SK_SP), "
        "Imaging Parameters (Echo Time, Repetition Time, Inversion Time, Flip Angle): (0.08, 4.5, NONE, 90)"
    )
    assert make_caption(FLAIR, "sagittal") == (
        "A brain MRI, plane sagittal, Scanner (Manufacturer, Model, Field Strength): (GE, DISCOVERY MR750, 1.5), "
        "Acquisition (Description, Sequence, Variant): (Sag FLAIR, SE_IR, SK_SS_MP), "
        "Imaging Parameters (Echo Time, Repetition Time, Inversion Time, Flip Angle): (0.1254, 6, 1.8, 90)"
    )


def test_empty_metadata_gives_all_none_caption() -> None:
    assert make_caption(AcquisitionMetadata(), None) == (
        "A brain MRI, plane NONE, Scanner (Manufacturer, Model, Field Strength): (NONE, NONE, NONE), "
        "Acquisition (Description, Sequence, Variant): (NONE, NONE, NONE), "
        "Imaging Parameters (Echo Time, Repetition Time, Inversion Time, Flip Angle): (NONE, NONE, NONE, NONE)"
    )


def test_fields_cover_every_metadata_field_plus_plane_and_anatomy() -> None:
    fields = caption_fields(T2, "axial")
    assert set(fields) == set(FIELD_NAMES)
    assert fields["MRAcquisitionType"] == "2D"
    assert fields["SliceThickness"] == "5"
    assert fields["InversionTime"] == NONE
    assert fields["RescaleSlope"] == NONE


def test_custom_template_units_and_rounding() -> None:
    cfg = CaptionConfig(template="{anatomy} {MRAcquisitionType} TE={EchoTime} TR={RepetitionTime}", anatomy="knee",
                        time_unit="ms", decimals=1)
    assert make_caption(FLAIR.replace(MRAcquisitionType="3D"), "sagittal", cfg) == "knee 3D TE=125.4 TR=6000"
    assert format_number(0.00246, 4) == "0.0025"
    assert format_number(2.0, 0) == "2"
    assert format_number(-0.00001, 2) == "0"


def test_unknown_template_field_is_a_config_error_listing_valid_names() -> None:
    with pytest.raises(ConfigError, match="EchoTim.*valid:.*EchoTime"):
        CaptionConfig(template="TE {EchoTim}")
    with pytest.raises(ConfigError):
        CaptionConfig(template="positional {}")
    with pytest.raises(ConfigError):
        CaptionConfig(time_unit="us")  # type: ignore[arg-type]


def test_render_fills_missing_keys_with_none() -> None:
    assert render({"plane": "axial"}, CaptionConfig(template="{plane}/{FlipAngle}")) == "axial/NONE"


def test_drop_fields_is_seeded_keeps_scaffold_and_follows_p() -> None:
    fields = caption_fields(T2, "axial")
    assert drop_fields(fields, 0.0, np.random.default_rng(0)) == fields
    all_dropped = drop_fields(fields, 1.0, np.random.default_rng(0))
    assert all_dropped["plane"] == "axial" and all_dropped["anatomy"] == "brain"
    assert {v for k, v in all_dropped.items() if k not in ("plane", "anatomy")} == {NONE}
    a = drop_fields(fields, 0.5, np.random.default_rng(7))
    assert a == drop_fields(fields, 0.5, np.random.default_rng(7))
    # Of the fields that have a value (besides plane and anatomy), about 30% are dropped.
    present = [k for k, v in fields.items() if v != NONE and k not in ("plane", "anatomy")]
    dropped = [drop_fields(fields, 0.3, np.random.default_rng(s))[k] == NONE for s in range(200) for k in present]
    assert abs(np.mean(dropped) - 0.3) < 0.03
    with pytest.raises(ConfigError):
        drop_fields(fields, 1.5, np.random.default_rng(0))
