"""The CLI shell: bare bool flags, clear one-line errors."""

from __future__ import annotations

from radlens.cli import bare_flags_to_true


def test_bare_bool_flag_gets_true_and_explicit_values_stay():
    flags = {"--preview", "--dicom"}
    assert bare_flags_to_true(["mri", "out", "--preview"], flags) == ["mri", "out", "--preview", "true"]
    assert bare_flags_to_true(["--preview", "--dicom", "x"], flags) == ["--preview", "true", "--dicom", "true", "x"]
    assert bare_flags_to_true(["--preview", "false", "--seed", "3"], flags) == ["--preview", "false", "--seed", "3"]
    assert bare_flags_to_true(["--seed", "3"], flags) == ["--seed", "3"]


def test_a_named_command_parses_alone_and_groups_list_their_commands(capsys, tmp_path):
    import pytest

    from radlens.cli import main

    with pytest.raises(SystemExit) as exit_help:
        main(["phantom", "ct", "--help"])
    assert exit_help.value.code == 0 and "usage: radlens phantom ct" in capsys.readouterr().out
    with pytest.raises(SystemExit) as missing:
        main(["phantom", "ct"])
    assert missing.value.code != 0 and "out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as group:
        main(["train", "--help"])
    assert group.value.code == 0 and "clip" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
