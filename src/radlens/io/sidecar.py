"""Acquisition metadata from a dcm2niix/BIDS JSON sidecar, and the mapping -> record step
shared with the DICOM reader, so that both give the same record for the same acquisition.

Times are checked for their unit: a sidecar (seconds by BIDS) whose times cannot be seconds
but are consistent as milliseconds is converted and says so in ``extra["time_units"]``; times
that are negative, impossible in either unit, or inconsistent with each other are refused.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from radlens.errors import InputError
from radlens.io.metadata import LIST_FIELDS, NUMERIC_FIELDS, TEXT_FIELDS, AcquisitionMetadata
from radlens.io.phi import filter_phi, tag_values

# Other names for a typed field: DICOM keyword (dcm2niix renames it in the JSON) and the
# enhanced-MR functional-group name of the echo time.
ALIASES = {
    "ManufacturerModelName": "ManufacturersModelName",
    "EffectiveEchoTime": "EchoTime",
}
TIME_FIELDS = ("EchoTime", "RepetitionTime", "InversionTime")
# The longest each time can be, in seconds. The BIDS validator asks "are you sure it's expressed in
# seconds?" above the first two (ECHO_TIME_GREATER_THAN, REPETITION_TIME_GREATER_THAN); inversion
# times reach about 3 s (FLAIR, MP2RAGE).
SECONDS_LIMITS = {"EchoTime": 1.0, "RepetitionTime": 100.0, "InversionTime": 10.0}
# Echo time over repetition time: always below 1; below 1e-4 (TE 1 ms with TR 10 s) no sequence
# uses, but a TE in seconds next to a TR in milliseconds gives.
MIN_ECHO_TO_REPETITION = 1e-4

log = logging.getLogger(__name__)


def _number(name: str, value: Any, source: str | PathLike[str] | None) -> float:
    if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
        raise InputError(source, f"{name} is not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(source, f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise InputError(source, f"{name} is not a finite number: {value!r}")
    return number


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _codes(value: Any) -> tuple[str, ...] | None:
    """Multi-valued code strings: DICOM lists, ``"GR\\IR"``, or dcm2niix's ``"SP_OSP"``.

    The defined terms of ScanningSequence/SequenceVariant contain no underscore, so
    splitting dcm2niix's joined form on ``_`` is exact.
    """
    items = value if isinstance(value, (list, tuple)) else str(value).replace("\\", "_").split("_")
    codes = tuple(str(v).strip() for v in items if str(v).strip())
    return codes or None


def _seconds(
    times: dict[str, float], time_unit: Literal["s", "ms"], source: str | PathLike[str] | None
) -> tuple[dict[str, float], str | None]:
    """``times`` (EchoTime/RepetitionTime/InversionTime in ``time_unit``) in seconds, and a note
    when a sidecar's times were found to be milliseconds; InputError when they make no sense."""
    negative = [f"{name} {value:g}" for name, value in times.items() if value < 0]
    if negative:
        raise InputError(source, f"negative time: {', '.join(negative)}")
    scale = 1000.0 if time_unit == "ms" else 1.0
    seconds = {name: value / scale for name, value in times.items()}
    too_long = [name for name, value in seconds.items() if value > SECONDS_LIMITS[name]]
    note = None
    if too_long and time_unit == "s":
        listed = ", ".join(f"{name} {times[name]:g}" for name in too_long)
        note = (f"milliseconds, converted to seconds: {listed} cannot be seconds (longest: "
                + ", ".join(f"{name} {SECONDS_LIMITS[name]:g} s" for name in too_long) + ")")
        seconds = {name: value / 1000.0 for name, value in times.items()}
        too_long = [name for name, value in seconds.items() if value > SECONDS_LIMITS[name]]
    if too_long:
        unit = "s or ms" if note else time_unit
        listed = ", ".join(f"{name} {times[name]:g} {unit}" for name in too_long)
        raise InputError(source, f"impossible time: {listed} (longest: "
                                 + ", ".join(f"{name} {SECONDS_LIMITS[name]:g} s" for name in too_long) + ")")
    echo, repetition = seconds.get("EchoTime"), seconds.get("RepetitionTime")
    if echo and repetition and not MIN_ECHO_TO_REPETITION * repetition <= echo < repetition:
        unit = "ms" if note else time_unit
        raise InputError(
            source, f"EchoTime {times['EchoTime']:g} and RepetitionTime {times['RepetitionTime']:g} cannot both be "
                    f"{unit}: the echo time must be shorter than the repetition time, and not 10,000 times shorter "
                    "(seconds and milliseconds mixed?)"
        )
    if note:
        log.warning("%s: times in %s", source, note)
    return {name: round(value, 12) for name, value in seconds.items()}, note


def metadata_from_mapping(
    values: Mapping[str, Any],
    *,
    time_unit: Literal["s", "ms"] = "s",
    source: str | PathLike[str] | None = None,
) -> AcquisitionMetadata:
    """An :class:`AcquisitionMetadata` from ``{keyword: value}`` (sidecar keys or DICOM keywords).

    ``time_unit`` is the unit of EchoTime/RepetitionTime/InversionTime in ``values``: seconds
    for sidecars, milliseconds for DICOM; the record always holds seconds. Seconds that can only
    be milliseconds (EchoTime 90) are converted, with ``extra["time_units"]`` saying so; negative,
    impossible or mutually inconsistent times raise :class:`InputError` (see :func:`_seconds`).
    Keys that are not typed fields go to ``extra`` after the PHI filter. A numeric field holding
    something other than a number raises :class:`InputError` naming ``source``, the field and the value.
    """
    plain = filter_phi(tag_values(values))
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in plain.items():
        name = ALIASES.get(key, key)
        if name not in NUMERIC_FIELDS + TEXT_FIELDS + LIST_FIELDS:
            extra[key] = value
        elif name not in fields or key == name:
            fields[name] = value
    record: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or (isinstance(value, (str, list)) and len(value) == 0):
            continue
        if name in NUMERIC_FIELDS:
            record[name] = _number(name, value, source)
        elif name in LIST_FIELDS:
            record[name] = _codes(value)
        else:
            record[name] = _text(value)
    # Rounded so DICOM's "9.35" ms gives the sidecar's 0.00935 s, not 0.009349999999999999.
    times, note = _seconds({k: v for k, v in record.items() if k in TIME_FIELDS}, time_unit, source)
    if note:
        extra["time_units"] = note
    return AcquisitionMetadata(**{**record, **times}, extra=extra)


def read_sidecar(path: str | PathLike[str]) -> AcquisitionMetadata:
    """Metadata from a dcm2niix/BIDS JSON sidecar (times in seconds), PHI removed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "sidecar does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"malformed JSON sidecar: {err}") from None
    if not isinstance(data, dict):
        raise InputError(path, f"sidecar must hold a JSON object, not {type(data).__name__}")
    return metadata_from_mapping(data, time_unit="s", source=path)


def sidecar_path(image_path: str | PathLike[str]) -> Path:
    """The sidecar of an image: same stem, ``.json`` (``sub-01_T1w.nii.gz`` -> ``sub-01_T1w.json``)."""
    path = Path(image_path)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mgz", ".mgh"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")
