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


def _leaves(commands, path=()):
    for name, value in commands.items():
        if name == "_help":
            continue
        if isinstance(value, dict):
            yield from _leaves(value, (*path, name))
        else:
            yield " ".join((*path, name)), value


def _undocumented(function) -> list[str]:
    """Options and positionals of a command's parser whose help is empty or only jsonargparse's "(type: ...)"."""
    import argparse

    from jsonargparse import auto_parser

    parser = auto_parser(function, as_positional=True)
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in ("config", "print_config"):
            continue
        text = (action.help or "").strip()
        if not text or text == argparse.SUPPRESS or text.startswith("("):
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def test_every_command_group_and_option_has_help():
    """Walks every command's parser (other areas' commands included): each option, positional and group
    has a sentence of help from the function's ``Args:`` or the config dataclass' ``Attributes:``."""
    from jsonargparse import set_parsing_settings

    from radlens.cli import commands_with_help

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    commands = commands_with_help()
    groups = [name for name, value in commands.items() if isinstance(value, dict)]
    assert groups and all(commands[g].get("_help") for g in groups), groups
    missing = {name: gaps for name, function in _leaves(commands) if (gaps := _undocumented(function))}
    assert not missing, missing


def test_version_and_the_convention_in_the_top_level_help(capsys):
    import pytest

    import radlens
    from radlens.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"radlens {radlens.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "[MODEL] DATA OUT" in out and "--version" in out
    assert "Train a model into a run folder" in out  # a group's one sentence


def test_inputs_then_output_positionally_for_every_command():
    """One convention: [MODEL] DATA OUT positional, the output named OUT/out and last."""
    import inspect

    from radlens.cli import commands_with_help

    for name, function in _leaves(commands_with_help()):
        required = [p.name for p in inspect.signature(function).parameters.values() if p.default is inspect._empty]
        if name in ("models", "demo") or not required:
            continue
        if name.startswith("info") or name.startswith("phantom"):
            assert len(required) == 1, (name, required)
            continue
        assert required[-1] in ("out", "output"), (name, required)


def test_prompts_help_lists_every_packaged_set(capsys):
    import pytest

    from radlens.cli import main
    from radlens.models.prompts import packaged_prompt_files

    with pytest.raises(SystemExit):
        main(["evaluate", "zeroshot", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in packaged_prompt_files()) and "ctrate_reports" in help_text


def test_phantom_mri_prints_a_line_for_people(tmp_path, capsys):
    from radlens.cli import main

    args = ["phantom", "mri", str(tmp_path / "mri"), "--subjects", "1", "--phantom.series_per_subject", "1",
            "--phantom.resolution", "4", "--phantom.lesion_probability", "0"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"phantom mri: 1 subjects, 1 series -> {tmp_path / 'mri'}"
