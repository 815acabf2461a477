"""Check that a file loader refuses bad content with an InputError naming the file."""

from __future__ import annotations

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
