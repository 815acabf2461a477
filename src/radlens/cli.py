"""The ``radlens`` command line: a thin layer over the API, built by jsonargparse.

Every subcommand is a typed Python function elsewhere in the package; its dataclass
parameters become option groups with dotted overrides (``--spatial.target_spacing``), and
``--config cfg.yaml`` loads any of them from YAML. ``--print_config`` shows the resolved config.
"""

from __future__ import annotations

import sys
from typing import Any


def _commands() -> dict[str, Any]:
    """Subcommand name -> function (or a dict of sub-subcommands)."""
    commands: dict[str, Any] = {}
    # Each area registers its own subcommands here (one line per import).
    from radlens.demo import demo
    from radlens.evaluate.retrieval import evaluate_retrieval
    from radlens.train.clip import train_clip

    commands["demo"] = demo
    commands.setdefault("train", {})["clip"] = train_clip
    commands.setdefault("evaluate", {})["retrieval"] = evaluate_retrieval
    from radlens.evaluate.embed import embed
    from radlens.evaluate.zeroshot import zeroshot

    commands.setdefault("evaluate", {})["zeroshot"] = zeroshot
    commands["embed"] = embed
    from radlens.evaluate.probe import evaluate_probe
    from radlens.train.labeller import label_reports, train_labeller
    from radlens.train.mil import train_mil
    from radlens.train.moco import train_moco
    from radlens.train.probe_train import train_probe
    from radlens.train.vocabfine import train_vocabfine

    commands.setdefault("train", {})["probe"] = train_probe
    commands.setdefault("train", {})["vocabfine"] = train_vocabfine
    commands.setdefault("train", {})["labeller"] = train_labeller
    commands.setdefault("train", {})["moco"] = train_moco
    commands.setdefault("train", {})["mil"] = train_mil
    commands["label-reports"] = label_reports
    from radlens.evaluate.extract import extract_bags

    commands["extract"] = {"bags": extract_bags}
    commands.setdefault("evaluate", {})["probe"] = evaluate_probe
    from radlens.info import info
    from radlens.models.registry import models
    from radlens.phantoms.ct import phantom_ct
    from radlens.phantoms.mri import phantom_mri
    from radlens.prepare.exporters.m3d import m3d
    from radlens.prepare.exporters.mrclip import mrclip
    from radlens.prepare.pipeline import prepare_commands

    commands["prepare"] = prepare_commands()  # one per source, its preset as the defaults
    commands["export"] = {"mrclip": mrclip, "m3d": m3d}
    commands["info"] = info
    commands["models"] = models
    commands.setdefault("phantom", {})["mri"] = phantom_mri
    commands.setdefault("phantom", {})["ct"] = phantom_ct
    return commands


_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "on", "off"}


def _bool_options(commands: dict[str, Any]) -> set[str]:
    """``--name`` of every bool parameter of every command function."""
    import inspect

    names: set[str] = set()
    for value in commands.values():
        if isinstance(value, dict):
            names |= _bool_options(value)
            continue
        for param in inspect.signature(value).parameters.values():
            if param.annotation in (bool, "bool", "bool | None"):
                names.add(f"--{param.name}")
    return names


def bare_flags_to_true(argv: list[str], bool_options: set[str]) -> list[str]:
    """Let a bool option be given bare (``--preview``) as well as ``--preview true``.

    jsonargparse wants a value after every bool option; users of command-line tools expect
    flags, so a bool option not followed by a truth word gets an explicit ``true``.
    """
    out: list[str] = []
    for i, token in enumerate(argv):
        out.append(token)
        following = argv[i + 1].lower() if i + 1 < len(argv) else None
        if token in bool_options and following not in _BOOL_WORDS:
            out.append("true")
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radlens`` console script."""
    from jsonargparse import auto_cli

    from radlens.errors import ConfigError, InputError

    commands = _commands()
    args = bare_flags_to_true(list(sys.argv[1:] if argv is None else argv), _bool_options(commands))
    path, target, rest = [], commands, args
    while isinstance(target, dict) and rest and rest[0] in target:
        path, target, rest = [*path, rest[0]], target[rest[0]], rest[1:]
    try:
        if callable(target):
            # A command named in full: build only its parser. That is faster than building all of
            # them, and jsonargparse reports a bad key in the --config of a nested subcommand as a
            # bare "error: 'train'" instead of naming the key.
            result = auto_cli(target, args=rest, as_positional=True, prog=f"radlens {' '.join(path)}")
        else:
            result = auto_cli(commands, args=args, as_positional=True)
    except (InputError, ConfigError) as err:
        print(f"radlens: error: {err}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
