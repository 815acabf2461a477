"""Damaged files for the bad-input tests: byte mutations, DICOM element surgery, and a check that a
loader refuses bad content with an InputError naming the file."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from radlens.errors import InputError


def assert_refused(load: Callable[[Path], Any], path: Path, text: str, reason: str) -> None:
    """Write ``text`` to ``path``; ``load(path)`` must raise InputError matching ``reason`` and naming ``path``."""
    path.write_text(text)
    with pytest.raises(InputError, match=reason) as err:
        load(path)
    assert str(path) in str(err.value)


def patch_dicom_element(path: Path, group: int, element: int, *, vr: bytes | None = None, value: bytes | None = None) -> Path:
    """Rewrite one data element of an explicit-VR little-endian DICOM file in place, byte by byte,
    the way a damaged file holds it: pydicom's writer would refuse (or fix) the same content.

    ``vr`` replaces the two VR characters; ``value`` replaces the value and its length field (an
    odd length is written as given). Only elements with a 2-byte length (DS, IS, US, CS, ...) are
    patched; the first occurrence of the tag after the file meta group is the one changed.
    """
    import struct

    data = bytearray(path.read_bytes())
    tag = struct.pack("<HH", group, element)
    long_vrs = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
    at = data.find(tag, 132 + 4)
    while at >= 0 and (not bytes(data[at + 4 : at + 6]).isupper() or data[at + 4 : at + 6] in long_vrs):
        at = data.find(tag, at + 1)  # the bytes matched inside a value, or a long-length element
    if at < 0:
        raise ValueError(f"tag ({group:04X},{element:04X}) not found in {path}")
    length = struct.unpack("<H", data[at + 6 : at + 8])[0]
    old_value = bytes(data[at + 8 : at + 8 + length])
    new_vr = vr if vr is not None else bytes(data[at + 4 : at + 6])
    new_value = value if value is not None else old_value
    data[at : at + 8 + length] = tag + new_vr + struct.pack("<H", len(new_value)) + new_value
    path.write_bytes(bytes(data))
    return path


def mutate(data: bytes, rng: random.Random, header: int) -> bytes:
    """One random damage: flipped bits, an overwritten run, a truncation or inserted bytes; three
    times in four inside the first ``header`` bytes."""
    out = bytearray(data)
    span = header if rng.random() < 0.75 else len(out)
    at = rng.randrange(max(1, min(span, len(out))))
    kind = rng.choice(("flip", "overwrite", "truncate", "insert"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(max(1, min(span, len(out))))
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        fill = rng.choice((None, 0x00, 0xFF, 0x7F, 0x80))
        n = rng.randint(1, 16)
        out[at : at + n] = bytes(rng.randrange(256) if fill is None else fill for _ in range(n))
    elif kind == "truncate":
        del out[rng.randrange(len(out)) :]
    else:
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)
