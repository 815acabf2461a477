"""The README's walkthrough as data: its ``radlens`` command lines, in order, and the switch to tiny sizes.

The walkthrough is every ``bash`` block of the README section named :data:`SECTION`. A command may
continue over lines with a trailing backslash; ``#`` starts a comment. Only ``radlens ...`` lines are
commands (a block holds nothing else). :data:`TINY` rewrites the README's sizes to ones the test suite
can afford; each rule must match somewhere, so a README edit that drops a size the rule expects fails
the test instead of silently running the full size.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Walkthrough"

# README text -> tiny replacement. Regexes over the joined command line.
TINY: dict[str, str] = {
    r"--subjects \d+": "--subjects 4",
    r"--patients \d+": "--patients 24",
    r"--trainer\.max_time \S+": "--trainer.max_steps 2",
    r"--trainer\.max_steps \d+": "--trainer.max_steps 2",
    r"--trainer\.val_every_n_steps \d+": "--trainer.val_every_n_steps 1",
    r"--workers \d+": "--workers 1",
    r"--folds \d+": "--folds 2",
    r"--candidates \d+": "--candidates 2",
    r"--keep \d+": "--keep 1 --select first",  # a generator trained 2 steps passes no agreement filter
    r"--sampler\.steps \d+": "--sampler.steps 2",
    r"--limit \d+": "--limit 40",
}


def section_text(readme: str, heading: str = SECTION) -> str:
    """The text of the ``## heading`` section (up to the next ``## `` heading)."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    if match is None:
        raise AssertionError(f"README has no '## {heading}' section")
    return match.group(1)


def commands(readme: str, section: str | None = SECTION) -> list[str]:
    """The ``radlens`` command lines of a section (``None``: the whole README) in order, continuations
    joined, comments removed. In the walkthrough every line must be a radlens command."""
    out: list[str] = []
    text = readme if section is None else section_text(readme, section)
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] != "radlens":
                if section is None:
                    continue
                raise AssertionError(f"walkthrough line is not a radlens command: {line!r}")
            out.append(shlex.join(words))
    return out


def tiny(lines: list[str]) -> tuple[list[str], set[str]]:
    """The commands with :data:`TINY` applied, and the rules that matched nothing."""
    unused = set(TINY)
    out = []
    for line in lines:
        for pattern, replacement in TINY.items():
            line, n = re.subn(pattern, replacement, line)
            if n:
                unused.discard(pattern)
        out.append(line)
    return out, unused
