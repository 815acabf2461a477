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

Patient pseudonyms are keyed (:class:`PhiKey`, HMAC-SHA256 with a key the data owner keeps outside
the outputs), and identity found in file and folder names can be taken out (:func:`redact`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radlens.errors import ConfigError

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


# --- Keyed pseudonyms -------------------------------------------------------------------------
#
# A pseudonym must not lead back to the identity it replaces. A plain or salted hash of a
# PatientID does: the salt travels with the code (or the outputs) and the ids are few and
# structured, so trying every candidate takes seconds. A keyed hash (HMAC-SHA256) whose key only
# the data owner holds cannot be inverted that way. The key never enters an output; its
# fingerprint (an HMAC of a fixed text, which tells keys apart without revealing them) does.

PHI_KEY_ENV = "RADLENS_PHI_KEY"
PHI_KEY_FILE_ENV = "RADLENS_PHI_KEY_FILE"
MIN_KEY_CHARS = 32
_FINGERPRINT_TEXT = b"radlens pseudonym key fingerprint v1"


@dataclass(frozen=True)
class PhiKey:
    """The secret of keyed pseudonyms and where it came from (for messages, never for outputs)."""

    secret: bytes = field(repr=False)
    origin: str

    @property
    def fingerprint(self) -> str:
        """16 hex digits that differ between keys and reveal nothing about the key."""
        return hmac.new(self.secret, _FINGERPRINT_TEXT, hashlib.sha256).hexdigest()[:16]

    def pseudonym(self, prefix: str, value: str, length: int = 16) -> str:
        """``prefix`` + the first ``length`` hex digits of HMAC-SHA256(key, value): stable for a key."""
        return prefix + hmac.new(self.secret, value.encode("utf-8"), hashlib.sha256).hexdigest()[:length]


def default_key_file() -> Path:
    """``$RADLENS_PHI_KEY_FILE``, else ``$XDG_CONFIG_HOME/radlens/phi.key`` (``~/.config/radlens/phi.key``)."""
    if os.environ.get(PHI_KEY_FILE_ENV):
        return Path(os.environ[PHI_KEY_FILE_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "radlens" / "phi.key"


def _checked_secret(text: str, where: str) -> bytes:
    secret = text.strip()
    if len(secret) < MIN_KEY_CHARS:
        raise ConfigError(f"{where}: a pseudonym key needs at least {MIN_KEY_CHARS} characters (e.g. the output of "
                          f"`openssl rand -hex 32`), got {len(secret)}: a short key can be guessed")
    return secret.encode("utf-8")


def _read_key_file(path: Path) -> PhiKey:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the pseudonym key ({err})") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        print(f"radlens: warning: {path} can be read by other users; `chmod 600 {path}` keeps the pseudonym key private",
              file=sys.stderr)
    return PhiKey(_checked_secret(text, str(path)), f"file {path}")


def _create_key_file(path: Path) -> PhiKey:
    """A new random key in ``path`` (mode 0600, created exclusively: never overwrites a key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use that one
        return _read_key_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    print(f"radlens: created a new pseudonym key in {path} (mode 0600). Keep it, back it up and keep it out of "
          "shared outputs: the same key gives the same pseudonyms, a lost key cannot be recovered.", file=sys.stderr)
    return PhiKey(secret.encode("utf-8"), f"file {path} (created)")


def key_location(key_file: str | os.PathLike[str] | None = None) -> Path | None:
    """The file :func:`load_phi_key` takes the key from (``key_file``, else the default key file),
    or None when the key comes from ``$RADLENS_PHI_KEY``."""
    if key_file is not None:
        return Path(key_file).expanduser()
    return None if os.environ.get(PHI_KEY_ENV) else default_key_file()


def check_key_outside(key_file: str | os.PathLike[str] | None, outputs: Sequence[str | os.PathLike[str]]) -> None:
    """ConfigError when the key file lies inside one of ``outputs``: the key would travel with the
    data it protects."""
    path = key_location(key_file)
    if path is None:
        return
    resolved = path.resolve()
    for out in outputs:
        if resolved.is_relative_to(Path(out).resolve()):
            raise ConfigError(f"{path}: the pseudonym key must be kept outside the output {out}")


def load_phi_key(key_file: str | os.PathLike[str] | None = None, outputs: Sequence[str | os.PathLike[str]] = ()) -> PhiKey:
    """The pseudonym key: ``key_file``, else ``$RADLENS_PHI_KEY`` (the key itself), else the
    :func:`default_key_file`, created with a random key on first use.

    ``outputs`` are folders the command writes: a key file inside one of them is refused
    (:func:`check_key_outside`).
    """
    if key_file is not None and not Path(key_file).expanduser().is_file():
        raise ConfigError(f"{Path(key_file).expanduser()}: no such pseudonym key file")
    check_key_outside(key_file, outputs)
    path = key_location(key_file)
    if path is None:
        return PhiKey(_checked_secret(os.environ[PHI_KEY_ENV], f"${PHI_KEY_ENV}"), f"${PHI_KEY_ENV}")
    return _read_key_file(path) if path.is_file() else _create_key_file(path)


# --- Identity in file and folder names ---------------------------------------------------------

# Tags whose values, found in a folder or file name, identify the patient (or a visit date).
IDENTITY_TAGS = ("PatientID", "OtherPatientIDs", "PatientName", "PatientBirthDate", "AccessionNumber",
                 "StudyDate", "SeriesDate", "AcquisitionDate")
_MIN_TOKEN = 3
REDACTED = "*"


def identity_tokens(obj: Any) -> frozenset[str]:
    """Letters and digits of the identifying values of a pydicom ``Dataset`` or mapping (each part
    of a person name separately), lower case, at least 3 characters."""
    values = tag_values(obj) if not isinstance(obj, Mapping) else dict(obj)
    tokens: set[str] = set()
    for keyword in IDENTITY_TAGS:
        value = values.get(keyword)
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            parts = re.split(r"[\^=\s,]+", str(item)) if keyword == "PatientName" else [str(item)]
            tokens.update(t for t in ("".join(c for c in p if c.isalnum()).lower() for p in parts) if len(t) >= _MIN_TOKEN)
    return frozenset(tokens)


def redact(text: str, tokens: Iterable[str]) -> str:
    """``text`` with every occurrence of a token replaced by ``*``; case and separators between the
    token's characters (``2020-01-31`` for ``20200131``, ``DOE_JOHN`` for ``doe`` and ``john``) are ignored."""
    for token in sorted(tokens, key=len, reverse=True):
        pattern = r"[^A-Za-z0-9]?".join(re.escape(c) for c in token)
        text = re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)
    return text
