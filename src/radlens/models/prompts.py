"""Zero-shot prompt files: read and validated into prompt sets, and embedded with a CLIP model.

A prompt file (YAML; ``ctrate``, ``ctrate_reports``, ``mri_contrast`` and ``mri_contrast_captions``
ship with radlens, in ``radlens/models/prompts``) holds either present/absent pairs, one per
finding (``mode: pairs``, the default; :class:`PromptSet`)::

    name: ct-rate
    template: {present: ["{finding} is present."], absent: ["{finding} is not present."]}
    findings:
      Cardiomegaly: {}                                   # the template, {finding} = the name
      T2*w: {term: T2*-weighted}                          # {finding} = term
      Lung nodule: {present: [...], absent: [...]}        # own phrasings

or mutually exclusive classes, each with one or more prompts (``mode: classes``;
:class:`ClassPrompts`). A model trained on metadata captions (MR-CLIP) has never read "A
T1-weighted MRI."; its prompts must be captions in its training template. A class prompt may
therefore give caption *fields* instead of text; they are rendered with
:mod:`radlens.prepare.captions` and a caption config (the evaluated dataset's, when evaluating),
every field not given reading ``NONE`` (in distribution: training drops fields to NONE)::

    name: mri-contrast-captions
    mode: classes
    classes:
      T1w:
        - fields: {SeriesDescription: t1_se_tra}
        - fields: {ScanningSequence: [SE], EchoTime: 0.012, RepetitionTime: 0.5}   # times in seconds
      T2w:
        - "A T2-weighted MRI."                                                   # literal text

Several phrasings of one side (or prompts of one class) are averaged in embedding space and
re-normalised (:func:`encode_prompt_groups`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import InputError

if TYPE_CHECKING:
    import torch

    from radlens.models.clip import CLIPModel
    from radlens.prepare.captions import CaptionConfig

SIDES = ("present", "absent")
MODES = ("pairs", "classes")
_FILE_KEYS = {"name", "description", "mode", "template", "findings"}
_FINDING_KEYS = {"term", "present", "absent"}
_CLASS_FILE_KEYS = {"name", "description", "mode", "classes"}


@dataclass(frozen=True)
class PromptSet:
    """Per finding, the phrasings of "present" and of "absent" (each a non-empty tuple)."""

    name: str
    findings: tuple[str, ...]
    present: tuple[tuple[str, ...], ...]
    absent: tuple[tuple[str, ...], ...]

    def subset(self, names: Sequence[str]) -> PromptSet:
        """The prompts of ``names`` only, in that order."""
        index = [self.findings.index(n) for n in names]
        present, absent = tuple(self.present[i] for i in index), tuple(self.absent[i] for i in index)
        return PromptSet(self.name, tuple(names), present, absent)


@dataclass(frozen=True)
class ClassPrompts:
    """Per class, its prompt texts (rendered captions or literal strings; each a non-empty tuple)."""

    name: str
    classes: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]

    def subset(self, names: list[str]) -> ClassPrompts:
        """The prompts of ``names`` only, in that order."""
        return ClassPrompts(self.name, tuple(names), tuple(self.prompts[self.classes.index(n)] for n in names))


def packaged_prompt_files() -> dict[str, Path]:
    """Name -> YAML file of the prompt sets shipped in ``radlens/models/prompts``."""
    folder = resources.files("radlens.models") / "prompts"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def packaged_prompt_sets(mode: str) -> list[str]:
    """Names of the packaged prompt sets of one ``mode`` (``pairs`` or ``classes``), sorted: what ``--prompts``
    help lists, read from the package so that a new set appears there by itself."""
    return [name for name in sorted(packaged_prompt_files()) if read_prompt_spec(name)[2] == mode]


def _strings(value: Any, path: Path, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise InputError(path, f"{where} must be a non-empty list of non-empty strings, got {value!r}")
    return tuple(value)


def read_prompt_spec(name_or_path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], str]:
    """(file, parsed YAML mapping, mode) of a packaged prompt set name or a YAML path.

    ``mode`` is the file's ``mode:`` (``pairs`` when absent); anything else is an InputError.
    """
    import yaml

    packaged = packaged_prompt_files()
    path = packaged[str(name_or_path)] if str(name_or_path) in packaged else Path(name_or_path)
    if not path.is_file():
        raise InputError(path, f"no such prompt file (packaged prompt sets: {', '.join(sorted(packaged))})")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(path, f"not valid YAML ({err})".replace("\n", " ")) from err
    if not isinstance(spec, dict):
        raise InputError(path, "a prompt file must be a YAML mapping")
    mode = spec.get("mode", "pairs")
    if mode not in MODES:
        raise InputError(path, f"field 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    return path, spec, mode


def load_prompts(name_or_path: str | os.PathLike[str]) -> PromptSet:
    """A validated PromptSet from a packaged name (``ctrate``, ``mri_contrast``) or a YAML path.

    Every finding must end up with at least one present and one absent phrasing (its own or the
    template's); unknown keys, empty lists and a missing ``findings`` section are errors.
    """
    path, spec, mode = read_prompt_spec(name_or_path)
    if mode != "pairs":
        raise InputError(path, f"a 'mode: {mode}' prompt file, not present/absent pairs (run it with --label_column)")
    if not isinstance(spec.get("findings"), dict) or not spec["findings"]:
        raise InputError(path, "missing field 'findings' (a mapping of finding name -> prompts)")
    unknown = sorted(set(spec) - _FILE_KEYS)
    if unknown:
        raise InputError(path, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FILE_KEYS))}")
    template = spec.get("template") or {}
    if not isinstance(template, dict) or set(template) - set(SIDES):
        raise InputError(path, "field 'template' must be a mapping with 'present' and/or 'absent' lists")
    present, absent = [], []
    for finding, entry in spec["findings"].items():
        entry = entry or {}
        if not isinstance(entry, dict) or set(entry) - _FINDING_KEYS:
            raise InputError(path, f"finding {finding!r}: expected a mapping with keys from {sorted(_FINDING_KEYS)}")
        term = str(entry.get("term", finding))
        sides = []
        for side in SIDES:
            if side in entry:
                sides.append(_strings(entry[side], path, f"finding {finding!r} field '{side}'"))
            elif side in template:
                phrasings = _strings(template[side], path, f"template field '{side}'")
                sides.append(tuple(p.replace("{finding}", term) for p in phrasings))
            else:
                raise InputError(path, f"finding {finding!r} has no '{side}' prompts (and the template has none)")
        present.append(sides[0])
        absent.append(sides[1])
    names = tuple(str(f) for f in spec["findings"])
    return PromptSet(str(spec.get("name", path.stem)), names, tuple(present), tuple(absent))


def check_findings(prompts: PromptSet, known: Sequence[str], where: str | os.PathLike[str]) -> None:
    """InputError naming ``where`` when a prompt finding is not one of the dataset's findings."""
    unknown = [f for f in prompts.findings if f not in known]
    if unknown:
        raise InputError(where, f"prompt finding(s) {unknown} are not in the dataset's findings {list(known)}")


def _render_fields(values: Any, cfg: CaptionConfig, path: Path, where: str) -> str:
    """One caption from a ``fields:`` mapping: the given fields formatted as the dataset's captions, the rest NONE."""
    from radlens.io.metadata import LIST_FIELDS, NUMERIC_FIELDS, AcquisitionMetadata
    from radlens.prepare.captions import caption_fields, render

    allowed = ("plane", *AcquisitionMetadata.field_names())
    if not isinstance(values, dict) or not values:
        raise InputError(path, f"{where}: 'fields' must be a non-empty mapping of caption field -> value")
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InputError(path, f"{where}: unknown caption field(s) {unknown}; allowed: {', '.join(allowed)}")
    meta: dict[str, Any] = {}
    for key, value in values.items():
        if key in NUMERIC_FIELDS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(path, f"{where}: field {key} must be a number (times in seconds), got {value!r}")
        if key in LIST_FIELDS and isinstance(value, list):
            value = tuple(str(v) for v in value)
        meta[key] = value
    plane = meta.pop("plane", None)
    return render(caption_fields(AcquisitionMetadata(**meta), plane, cfg), cfg)


def _class_prompts(entry: Any, cfg: CaptionConfig, path: Path, name: str) -> tuple[str, ...]:
    if not isinstance(entry, list) or not entry:
        raise InputError(path, f"class {name!r} must list one or more prompts (a text or {{fields: {{...}}}})")
    texts = []
    for k, prompt in enumerate(entry):
        where = f"class {name!r} prompt {k + 1}"
        if isinstance(prompt, str) and prompt.strip():
            texts.append(prompt)
        elif isinstance(prompt, dict) and set(prompt) == {"fields"}:
            texts.append(_render_fields(prompt["fields"], cfg, path, where))
        else:
            raise InputError(path, f"{where}: expected a non-empty text or a mapping with the one key 'fields'")
    return tuple(texts)


def load_class_prompts(name_or_path: str | os.PathLike[str], caption: CaptionConfig | None = None) -> ClassPrompts:
    """A validated ClassPrompts from a packaged name (``mri_contrast_captions``) or a YAML path.

    ``fields:`` prompts are rendered with ``caption`` (default: MR-CLIP's template). Needs
    ``mode: classes`` and at least two classes; unknown keys, empty prompt lists, unknown caption
    fields, and two classes whose prompts render to the same texts are errors.
    """
    from radlens.prepare.captions import CaptionConfig

    cfg = caption or CaptionConfig()
    path, spec, mode = read_prompt_spec(name_or_path)
    if mode != "classes":
        reason = "not a 'mode: classes' prompt file (present/absent pairs are evaluated without --label_column)"
        raise InputError(path, reason)
    unknown = sorted(set(spec) - _CLASS_FILE_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_CLASS_FILE_KEYS))
        raise InputError(path, f"unknown field(s) {', '.join(unknown)}; allowed: {allowed}")
    classes = spec.get("classes")
    if not isinstance(classes, dict) or len(classes) < 2:
        raise InputError(path, "missing field 'classes' (a mapping of two or more class names -> prompts)")
    prompts = tuple(_class_prompts(entry, cfg, path, str(name)) for name, entry in classes.items())
    names = tuple(str(c) for c in classes)
    seen: dict[frozenset[str], str] = {}
    for name, texts in zip(names, prompts):
        if frozenset(texts) in seen:
            reason = f"classes {seen[frozenset(texts)]!r} and {name!r} have the same prompts under the caption template"
            raise InputError(path, reason)
        seen[frozenset(texts)] = name
    return ClassPrompts(str(spec.get("name", path.stem)), names, prompts)


def encode_prompt_groups(model: CLIPModel, groups: Sequence[Sequence[str]], batch_size: int = 64) -> torch.Tensor:
    """(G, D) float32: per group of phrasings, the re-normalised mean of their text embeddings.

    Every phrasing is encoded exactly once, in batches of ``batch_size``; call under
    ``torch.inference_mode()``.
    """
    import torch
    import torch.nn.functional as F

    texts = [t for group in groups for t in group]
    device = next(model.parameters()).device
    chunks = []
    for lo in range(0, len(texts), batch_size):
        tokens = model.tokenize(texts[lo : lo + batch_size])
        chunks.append(model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device)))
    flat = torch.cat(chunks).float()
    bounds = np.cumsum([0, *(len(g) for g in groups)])
    return torch.stack([F.normalize(flat[lo:hi].mean(0), dim=-1) for lo, hi in zip(bounds[:-1], bounds[1:])])
