"""The CLI shell: bare bool flags, clear one-line errors."""

from __future__ import annotations

from radlens.cli import bare_flags_to_true


def test_bare_bool_flag_gets_true_and_explicit_values_stay():
    flags = {"--preview", "--dicom"}
    assert bare_flags_to_true(["mri", "out", "--preview"], flags) == ["mri", "out", "--preview", "true"]
    assert bare_flags_to_true(["--preview", "--dicom", "x"], flags) == ["--preview", "true", "--dicom", "true", "x"]
    assert bare_flags_to_true(["--preview", "false", "--seed", "3"], flags) == ["--preview", "false", "--seed", "3"]
    assert bare_flags_to_true(["--seed", "3"], flags) == ["--seed", "3"]
