"""Metadata captions: the text side of image <-> metadata contrastive learning (MR-CLIP).

A caption is a ``str.format`` template over named fields: ``plane``, ``anatomy`` and every
:class:`~radlens.io.metadata.AcquisitionMetadata` field. The default template is MR-CLIP's
caption, character for character::

    A brain MRI, plane axial, Scanner (Manufacturer, Model, Field Strength): (SIEMENS, Skyra, 3),
    Acquisition (Description, Sequence, Variant): (t2_tse_tra, SE, SK_SP), Imaging Parameters
    (Echo Time, Repetition Time, Inversion Time, Flip Angle): (0.08, 4.5, NONE, 90)

How values are written (:func:`caption_fields`):

- missing -> ``NONE``;
- numbers are rounded to ``decimals`` and written without trailing zeros, as dcm2niix writes
  them into the sidecars MR-CLIP read (``3``, ``1.5``, ``0.08``, ``90``); times are in
  ``time_unit`` (seconds by default, as MR-CLIP);
- multi-valued fields are joined with ``_`` (``("SE", "IR")`` -> ``SE_IR``), which is how
  dcm2niix writes them and so what MR-CLIP's captions hold (MR-CLIP itself keeps only the first
  element of a JSON list; radlens keeps all of them);
- text is stripped of surrounding whitespace.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from radlens.errors import ConfigError
from radlens.io.metadata import LIST_FIELDS, NUMERIC_FIELDS, AcquisitionMetadata, is_missing

NONE = "NONE"

MRCLIP_TEMPLATE = (
    "A {anatomy} MRI, plane {plane}, "
    "Scanner (Manufacturer, Model, Field Strength): "
    "({Manufacturer}, {ManufacturersModelName}, {MagneticFieldStrength}), "
    "Acquisition (Description, Sequence, Variant): ({SeriesDescription}, {ScanningSequence}, {SequenceVariant}), "
    "Imaging Parameters (Echo Time, Repetition Time, Inversion Time, Flip Angle): "
    "({EchoTime}, {RepetitionTime}, {InversionTime}, {FlipAngle})"
)

TIME_FIELDS = ("EchoTime", "RepetitionTime", "InversionTime")
# Fields that describe the image rather than the acquisition: never dropped by drop_fields.
SCAFFOLD_FIELDS = ("anatomy", "plane")
FIELD_NAMES: tuple[str, ...] = SCAFFOLD_FIELDS + AcquisitionMetadata.field_names()


@dataclass(frozen=True)
class CaptionConfig:
    """Caption template and value formatting.

    Attributes:
        template: the caption with fields in braces, e.g. {EchoTime}; valid names are plane, anatomy and
            every acquisition metadata field (default: MR-CLIP's template).
        anatomy: the text that fills {anatomy}.
        time_unit: the unit TE, TR and TI are written in (s or ms).
        decimals: digits every number is rounded to.
    """

    template: str = MRCLIP_TEMPLATE
    anatomy: str = "brain"
    time_unit: Literal["s", "ms"] = "s"
    decimals: int = 4

    def __post_init__(self) -> None:
        template_fields(self.template)
        if self.time_unit not in ("s", "ms"):
            raise ConfigError(f"caption time_unit must be 's' or 'ms', got {self.time_unit!r}")
        if self.decimals < 0:
            raise ConfigError(f"caption decimals must be >= 0, got {self.decimals}")


def template_fields(template: str) -> tuple[str, ...]:
    """Field names a template uses; ``ConfigError`` for an unknown or positional field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError(f"caption template is not a valid format string: {err}") from err
    names = tuple(name for _, name, _, _ in parsed if name is not None)
    unknown = sorted({n for n in names if n not in FIELD_NAMES})
    if unknown:
        raise ConfigError(f"caption template names unknown field(s) {unknown}; valid: {', '.join(FIELD_NAMES)}")
    return names


def caption_fields(
    meta: AcquisitionMetadata, plane: str | None, cfg: CaptionConfig = CaptionConfig()
) -> dict[str, str]:
    """Every template field of one series, formatted (``NONE`` where missing)."""
    fields = {"anatomy": cfg.anatomy.strip() or NONE, "plane": _text(plane)}
    scale = 1000.0 if cfg.time_unit == "ms" else 1.0
    for name in AcquisitionMetadata.field_names():
        value = getattr(meta, name)
        if is_missing(value):
            fields[name] = NONE
        elif name in LIST_FIELDS:
            fields[name] = "_".join(str(v).strip() for v in value) if not isinstance(value, str) else value.strip()
        elif name in NUMERIC_FIELDS:
            fields[name] = format_number(float(value) * (scale if name in TIME_FIELDS else 1.0), cfg.decimals)
        else:
            fields[name] = _text(value)
    return fields


def render(fields: Mapping[str, str], cfg: CaptionConfig = CaptionConfig()) -> str:
    """Fill ``cfg.template`` with ``fields``; fields the template needs but ``fields`` lacks read ``NONE``."""
    return cfg.template.format_map({name: fields.get(name, NONE) for name in FIELD_NAMES})


def make_caption(meta: AcquisitionMetadata, plane: str | None, cfg: CaptionConfig = CaptionConfig()) -> str:
    """The caption of one series: :func:`render` of :func:`caption_fields`."""
    return render(caption_fields(meta, plane, cfg), cfg)


def drop_fields(
    fields: Mapping[str, str],
    p: float,
    rng: np.random.Generator,
    keep: Iterable[str] = SCAFFOLD_FIELDS,
) -> dict[str, str]:
    """Caption-field dropout for training: each field not in ``keep`` becomes ``NONE`` with probability ``p``.

    Teaches the text encoder that a field can be unknown, as it often is in clinical data.
    Draws one number per field in sorted name order, so a seeded ``rng`` gives the same result.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"field dropout probability must be in [0, 1], got {p}")
    kept = set(keep)
    names = sorted(fields)
    draws = rng.random(len(names))
    return {name: NONE if name not in kept and draw < p else fields[name] for name, draw in zip(names, draws)}


def format_number(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals`` without trailing zeros (``3.0`` -> ``3``, ``0.0800`` -> ``0.08``)."""
    if math.isnan(value):
        return NONE
    text = f"{round(value, decimals):.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _text(value: object) -> str:
    text = "" if value is None else str(value).strip()
    return text or NONE
