"""The ``radlens`` command line: a thin layer over the API, built by jsonargparse.

Every subcommand is a typed Python function elsewhere in the package; its dataclass
parameters become option groups with dotted overrides (``--spatial.target_spacing``), and
``--config cfg.yaml`` loads any of them from YAML. ``--print_config`` shows the resolved config.
Help text comes from the functions' ``Args:`` and the dataclasses' ``Attributes:`` (or attribute
docstrings); every command takes its inputs and output positionally, ``[MODEL] DATA OUT``.
"""

from __future__ import annotations

import sys
from typing import Any

DESCRIPTION = (
    "Learn and use representations of radiology images (MRI and CT, 2D and 3D) paired with reports or "
    "acquisition metadata. Every command takes its inputs, then its output, positionally: [MODEL] DATA OUT "
    "(e.g. `radlens evaluate zeroshot MODEL DATA OUT`); `radlens COMMAND --help` describes each option."
)
# One sentence per command group, shown by `radlens --help` (jsonargparse reads a group's "_help").
GROUP_HELP = {
    "train": "Train a model into a run folder (config, logs, checkpoints, best/ and last/ bundles): "
             "radlens train TASK [MODEL] DATA OUT.",
    "evaluate": "Evaluate a trained model on a prepared dataset split, with patient-bootstrap CIs: "
                "radlens evaluate KIND MODEL DATA OUT.",
    "prepare": "Import a source layout into a prepared dataset folder: radlens prepare SOURCE INPUT OUT.",
    "export": "Write a prepared dataset in another tool's layout: radlens export FORMAT DATA OUT.",
    "extract": "Extract features of a prepared dataset with a model: radlens extract bags MODEL DATA OUT.",
    "phantom": "Generate phantom data with known ground truth (no download): radlens phantom KIND OUT.",
}


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
    from radlens.evaluate.embed_shards import embed_merge

    commands["embed-merge"] = embed_merge  # joins the folders of `embed ... --shard i/n`
    from radlens.evaluate.probe import evaluate_probe
    from radlens.train.classfine import train_classfine
    from radlens.train.labeller import label_reports, train_labeller
    from radlens.train.mil import train_mil
    from radlens.train.moco import train_moco
    from radlens.train.vocabfine import train_vocabfine

    commands.setdefault("train", {})["classfine"] = train_classfine
    commands.setdefault("train", {})["vocabfine"] = train_vocabfine
    commands.setdefault("train", {})["labeller"] = train_labeller
    commands.setdefault("train", {})["moco"] = train_moco
    commands.setdefault("train", {})["mil"] = train_mil
    from radlens.train.controlnet import train_controlnet
    from radlens.train.ldm import train_ldm
    from radlens.train.vae import train_vae

    commands.setdefault("train", {})["vae"] = train_vae
    commands.setdefault("train", {})["ldm"] = train_ldm
    commands.setdefault("train", {})["controlnet"] = train_controlnet
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
    from radlens.prepare.shards import merge as prepare_merge

    commands["prepare"]["merge"] = prepare_merge  # joins the shard folders of `prepare ... --shard i/n`
    commands["export"] = {"mrclip": mrclip, "m3d": m3d}
    commands["info"] = info
    commands["models"] = models
    commands.setdefault("phantom", {})["mri"] = phantom_mri
    commands.setdefault("phantom", {})["ct"] = phantom_ct
    from radlens.evaluate.seg import evaluate_seg
    from radlens.prepare.exporters.nnunet import nnunet
    from radlens.train.seg import train_seg

    commands["export"]["nnunet"] = nnunet
    commands.setdefault("train", {})["seg"] = train_seg
    commands.setdefault("evaluate", {})["seg"] = evaluate_seg
    from radlens.synth.command import synth

    commands["synth"] = synth
    from radlens.evaluate.synth import evaluate_synth

    commands.setdefault("evaluate", {})["synth"] = evaluate_synth
    return commands


_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "on", "off"}


def _bool_options(commands: dict[str, Any]) -> set[str]:
    """``--name`` of every bool parameter of every command function."""
    import inspect

    names: set[str] = set()
    for value in commands.values():
        if isinstance(value, str):  # a group's "_help"
            continue
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


def commands_with_help() -> dict[str, Any]:
    """:func:`_commands` with each group's one-sentence help (:data:`GROUP_HELP`) under ``_help``."""
    commands = _commands()
    for group, text in GROUP_HELP.items():
        if isinstance(commands.get(group), dict):
            commands[group]["_help"] = text
    return commands


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``radlens`` console script."""
    from jsonargparse import auto_cli, set_parsing_settings

    import radlens
    from radlens.errors import ConfigError, InputError

    # Config dataclasses may document a field with a docstring below it as well as in ``Attributes:``.
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    commands = commands_with_help()
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
            result = auto_cli(commands, args=args, as_positional=True, prog="radlens", description=DESCRIPTION,
                              version=radlens.__version__)
    except (InputError, ConfigError) as err:
        print(f"radlens: error: {err}", file=sys.stderr)
        return 2
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
