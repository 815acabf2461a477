"""The PHI filter: which DICOM/sidecar tags may leave a reader.

Patient identity (names, ids, birth dates, addresses), institution and staff, accession
numbers, every date and time of day, free-text comments and device serial numbers are
dropped; instance/study/series UIDs are replaced by a stable pseudonym so that grouping by
UID still works. The same rules apply to a pydicom ``Dataset`` and to a dcm2niix/BIDS JSON
sidecar (dcm2niix can write ``PatientName`` and friends into the JSON).

The rules are keyword based (the DICOM standard keyword, which is also the sidecar key), plus
the value representation from pydicom's data dictionary: every person name (PN), date (DA),
date-time (DT) and time of day (TM) is identifying. ``EchoTime`` and friends are DS, not TM,
so they pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

# Identifying keywords that the VR and substring rules below do not already catch.
PHI_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientAddress",
        "OtherPatientIDs",
        "OtherPatientNames",
        "IssuerOfPatientID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "RequestingPhysician",
        "OperatorsName",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "AcquisitionDateTime",
        "PatientComments",
        "ImageComments",
        "DeviceSerialNumber",
        "StationName",
        "CurrentPatientLocation",
        "MedicalAlerts",
        "Allergies",
        "SmokingStatus",
        "PregnancyStatus",
        "LastMenstrualDate",
    }
)
# Any keyword containing one of these is identifying (addresses, staff, trial subject ids...).
PHI_SUBSTRINGS = (
    "Institution",
    "Address",
    "Telephone",
    "Telecom",
    "Physician",
    "Operator",
    "Comments",
    "Accession",
    "SerialNumber",
    "StationName",
    "ClinicalTrial",
    "Responsible",
    "OrderNumber",
    "Residence",
    "Admitting",
    "Admission",
    "Military",
    "BranchOfService",
    "EthnicGroup",
    "Occupation",
    "MedicalRecord",
    "Insurance",
    "Religious",
    "PatientHistory",
    "ReasonFor",
    "Diagnos",
)
# ``Patient*`` keywords are identifying except these (position/sex are acquisition facts).
# PatientAge/Weight/Size are quasi-identifiers and are dropped unless the user asks.
PATIENT_ALLOWED = frozenset({"PatientPosition", "PatientOrientation", "PatientSex", "PatientIdentityRemoved"})
# VRs that are always identifying: person name, date, date-time, time of day.
PHI_VRS = frozenset({"PN", "DA", "DT", "TM"})
# UIDs that name a standard class, not an instance: not identifying, kept as they are.
CLASS_UIDS = frozenset(
    {"SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID", "ReferencedSOPClassUID"}
)


def _dictionary_vr(keyword: str) -> str | None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    return dictionary_VR(tag) if tag is not None else None


def is_phi(keyword: str) -> bool:
    """True if the tag named ``keyword`` can identify a patient, site or person."""
    if keyword in CLASS_UIDS:
        return False
    if keyword in PHI_KEYWORDS or any(s in keyword for s in PHI_SUBSTRINGS):
        return True
    if keyword.startswith("Patient") and keyword not in PATIENT_ALLOWED:
        return True
    if keyword.endswith(("ID", "IDs")):
        return True
    vr = _dictionary_vr(keyword)
    if vr is not None:
        return vr in PHI_VRS
    # Not a DICOM keyword (a sidecar-only key): dates by name.
    return keyword.endswith(("Date", "DateTime"))


def is_uid(keyword: str) -> bool:
    """True for instance UIDs, which are pseudonymised rather than dropped."""
    return keyword.endswith(("UID", "UIDs")) and keyword not in CLASS_UIDS


def pseudonymise_uid(uid: str) -> str:
    """A stable, valid-looking UID (``2.25.<int>``) derived from ``uid`` by SHA-256."""
    digest = hashlib.sha256(uid.strip().encode()).hexdigest()[:32]
    return f"2.25.{int(digest, 16)}"


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a tag value; None for values that are not plain data."""
    from pydicom.multival import MultiValue
    from pydicom.sequence import Sequence
    from pydicom.valuerep import IS, DSdecimal, DSfloat, PersonName

    if isinstance(value, (Sequence, bytes, bytearray, dict)):
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None for i in items) else items
    if isinstance(value, (DSfloat, DSdecimal)):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, str):
        return str(value)  # drops pydicom's str subclasses (UID, ...)
    if isinstance(value, (int, float, bool)):
        return value
    return None


def tag_values(obj: Any) -> dict[str, Any]:
    """Top-level tags of a pydicom ``Dataset`` or a mapping as ``{keyword: plain value}``.

    Private tags, sequences, binary data and pixel data are left out; nothing is filtered
    for identity (that is :func:`safe_tags`).
    """
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        items = ((str(k), v) for k, v in obj.items())
    else:
        items = ((elem.keyword, elem.value) for elem in obj if elem.keyword and elem.keyword != "PixelData")
    for keyword, raw in items:
        value = _plain(raw)
        if value is not None or raw is None:
            out[keyword] = value
    return out


def filter_phi(values: Mapping[str, Any], allow_phi: bool = False) -> dict[str, Any]:
    """Drop identifying keys and pseudonymise instance UIDs of an already plain mapping."""
    if allow_phi:
        return dict(values)
    out: dict[str, Any] = {}
    for keyword, value in values.items():
        if is_uid(keyword):
            if isinstance(value, str):
                out[keyword] = pseudonymise_uid(value)
            elif isinstance(value, list):
                out[keyword] = [pseudonymise_uid(str(v)) for v in value]
        elif not is_phi(keyword):
            out[keyword] = value
    return out


def safe_tags(obj: Any, allow_phi: bool = False) -> dict[str, Any]:
    """Non-identifying top-level tags of a pydicom ``Dataset`` or a sidecar mapping.

    ``allow_phi=True`` keeps everything (for users who are entitled to see identity).
    """
    return filter_phi(tag_values(obj), allow_phi=allow_phi)
