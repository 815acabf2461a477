"""The README's walkthrough runs top to bottom, at tiny sizes, exactly as a user would type it.

`RADLENS_WALKTHROUGH=full` runs it at the README's own sizes instead (by hand: minutes, not seconds).
"""

from __future__ import annotations

import os
import shlex
import time

import pytest
from support.walkthrough import README, commands, tiny

from radlens.cli import main


def test_walkthrough_parses_and_every_tiny_rule_applies() -> None:
    lines = commands(README.read_text())
    assert len(lines) >= 10
    _, unused = tiny(lines)
    assert not unused, f"tiny-size rules that match no README command (README changed?): {sorted(unused)}"


def test_readme_walkthrough_runs_in_order(tmp_path, monkeypatch, capsys) -> None:
    full = os.environ.get("RADLENS_WALKTHROUGH") == "full"
    lines = commands(README.read_text())
    if not full:
        lines, _ = tiny(lines)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        start = time.perf_counter()
        status = main(shlex.split(line)[1:])
        printed = capsys.readouterr()
        with capsys.disabled():  # each step's time (at full size: the times the README states)
                print(f"\n[{time.perf_counter() - start:6.1f} s] {line}")
        assert status == 0, f"{line}\n{printed.out[-2000:]}\n{printed.err[-2000:]}"


@pytest.mark.parametrize("line", commands(README.read_text(), section=None))
def test_every_readme_command_parses_with_the_current_cli(line: str, capsys) -> None:
    """Every ``radlens`` line of the README (walkthrough or not) is accepted by the CLI as written."""
    with pytest.raises(SystemExit) as exit_info:
        main([*shlex.split(line)[1:], "--print_config"])
    assert exit_info.value.code == 0, f"{line}\n{capsys.readouterr().err[-1500:]}"
