"""MRGen-shaped prompts from a prepared dataset's typed metadata and mask labels.

MRGen's prompt is ``", ".join([modality, modality attributes, region, structures present])`` with
empty parts dropped, e.g. "T2 SPIR Abdomen MRI, fat low signal, water high signal, ..., Upper
Abdominal Region, liver, spleen". Here a *template* is a list of such parts, each a ``str.format``
string over the fields below; a part whose field has no value for an item (no inversion time on a
spin echo, no structure in a slice) is dropped, and the parts are joined with ", ".

Fields (from the series table of the prepared dataset, the card and the item's mask):

- ``contrast`` (the typed contrast class: T1w, T2w, FLAIR, ...), ``modality`` ("MRI" / "CT"),
  ``plane``, ``body_part`` (``BodyPartExamined``, else the card's caption anatomy, e.g. "brain"),
  ``echo_time``, ``repetition_time``, ``inversion_time`` (milliseconds, rounded), ``flip_angle``
  (degrees), ``field_strength`` (tesla);
- ``attributes``: the contrast's entry in the attributes table (a YAML file; the packaged
  ``generation_prompts.yaml`` unless the user gives one), e.g. "fat high signal, water low signal";
- ``structures``: the names of the mask labels present in the item, in label order (renamed by the
  table's ``structures`` section: "GM" -> "grey matter").

A template naming a field the dataset lacks (no ``contrast`` column, no mask labels for
``structures``, a contrast with no attributes entry) is a ConfigError naming the field, before any
training. The template and the tables travel in the model bundle (:meth:`PromptTemplate.to_dict`),
so sampling renders prompts exactly as training did.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset

PACKAGED = Path(__file__).with_name("generation_prompts.yaml")
DEFAULT_TEMPLATE = ("{contrast} {body_part} {modality}", "{attributes}", "TE {echo_time} ms", "TR {repetition_time} ms",
                    "TI {inversion_time} ms", "{plane} {body_part}", "{structures}")
# Template field -> (series column, how a value is written).
COLUMNS: dict[str, tuple[str, str]] = {
    "contrast": ("contrast", "text"), "modality": ("modality", "modality"), "plane": ("plane", "text"),
    "body_part": ("BodyPartExamined", "lower"), "echo_time": ("EchoTime", "ms"), "repetition_time": ("RepetitionTime", "ms"),
    "inversion_time": ("InversionTime", "ms"), "flip_angle": ("FlipAngle", "number"),
    "field_strength": ("MagneticFieldStrength", "number"),
}
DERIVED = ("attributes", "structures")
FIELDS = (*COLUMNS, *DERIVED)
MODALITY_WORDS = {"MR": "MRI", "MRI": "MRI", "CT": "CT"}  # a card/series modality as prompts write it


@dataclass
class PromptConfig:
    """How prompts are written: the template's parts, the attributes table and prompt dropout.

    Attributes:
        template: the prompt's parts, each a format string over the fields contrast, modality, plane,
            body_part, echo_time, repetition_time, inversion_time (ms), flip_angle, field_strength,
            attributes, structures; a part whose field is missing for an item is dropped; parts join with ", ".
        attributes: YAML file with the per-contrast ``attributes`` and the label ``structures`` names
            (None: the packaged table, radlens/data/generation_prompts.yaml).
        dropout: probability that a training prompt is replaced by the empty prompt (classifier-free guidance).
    """

    template: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATE))
    attributes: str | None = None
    dropout: float = 0.1


def _template_fields(parts: Sequence[str]) -> set[str]:
    names: set[str] = set()
    for part in parts:
        try:
            parsed = list(string.Formatter().parse(part))
        except ValueError as err:
            raise ConfigError(f"prompt template part {part!r} is not a format string ({err})") from err
        names |= {name for _, name, _, _ in parsed if name is not None}
    unknown = sorted(names - set(FIELDS))
    if unknown or "" in names:
        raise ConfigError(f"prompt template field(s) {', '.join(repr(n) for n in unknown or [''])} unknown; known: {', '.join(FIELDS)}")
    return names


@dataclass(frozen=True)
class PromptTemplate:
    """A template (parts) with its attributes table (contrast -> text) and label renames (label -> words)."""

    parts: tuple[str, ...]
    attributes: dict[str, str]
    structures: dict[str, str]

    @property
    def fields(self) -> set[str]:
        """The fields the parts use."""
        return _template_fields(self.parts)

    @classmethod
    def from_config(cls, cfg: PromptConfig) -> PromptTemplate:
        """The template of ``cfg`` with its tables read from the YAML file (InputError naming a bad file)."""
        import yaml

        path = Path(cfg.attributes) if cfg.attributes else PACKAGED
        try:
            table = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
            raise InputError(path, f"not a readable YAML attributes table ({err})") from err
        if not isinstance(table, dict) or not isinstance(table.get("attributes"), dict):
            raise InputError(path, "an attributes table is a mapping with an 'attributes' mapping (contrast -> text)")
        structures = table.get("structures") or {}
        if not isinstance(structures, dict):
            raise InputError(path, "'structures' must map label names to the words used in prompts")
        template = cls(tuple(cfg.template), {str(k): str(v) for k, v in table["attributes"].items()},
                       {str(k): str(v) for k, v in structures.items()})
        if not template.parts:
            raise ConfigError("the prompt template has no parts")
        template.fields  # noqa: B018  (checks the parts now)
        return template

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored in model bundles."""
        return {"template": list(self.parts), "attributes": dict(self.attributes), "structures": dict(self.structures)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptTemplate:
        """The template a bundle stored (:meth:`to_dict`)."""
        return cls(tuple(data["template"]), dict(data["attributes"]), dict(data.get("structures") or {}))

    def structure_words(self, names: Iterable[str]) -> str:
        """Label names as prompt words, comma separated ("GM" -> "grey matter")."""
        return ", ".join(self.structures.get(n, n.replace("_", " ")) for n in names)

    def render(self, fields: Mapping[str, Any]) -> str:
        """The prompt of one item from its field values (None, NaN or "" = missing; ``structures`` a
        list of label names; ``attributes`` looked up from ``contrast`` unless given)."""
        values = {k: _written(v) for k, v in fields.items() if k in COLUMNS}
        structures = fields.get("structures")
        values["structures"] = self.structure_words(structures) if structures else None
        attributes = fields.get("attributes")
        values["attributes"] = attributes if attributes else self.attributes.get(str(values.get("contrast") or ""))
        out = []
        for part in self.parts:
            names = _template_fields([part])
            if all(values.get(n) not in (None, "") for n in names):
                out.append(part.format(**{n: values[n] for n in names}))
        return ", ".join(out)


def _written(value: Any) -> Any:
    """A field value as a prompt writes it; None when missing (None, NaN, pandas' NA, blank text)."""
    import pandas as pd

    if isinstance(value, str):
        return value if value.strip() else None
    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return None
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class PromptBuilder:
    """The field values of a prepared dataset's series and the prompts of its items, for one template.

    ``check(series_ids)`` raises ConfigError naming any template field those series lack.
    """

    def __init__(self, prepared: PreparedDataset, template: PromptTemplate) -> None:
        self.prepared, self.template = prepared, template
        series = prepared.series
        self._rows = {sid: i for i, sid in enumerate(series["series_id"])}
        self.labels = prepared.labels
        anatomy = ((prepared.card.get("config") or {}).get("caption") or {}).get("anatomy")
        self.anatomy = str(anatomy).strip().lower() if anatomy else None
        for name in sorted(self.template.fields):
            column = COLUMNS.get(name, (None, None))[0]
            if name == "body_part" and column not in series.columns and not self.anatomy:
                raise ConfigError(f"prompt template field 'body_part': {prepared.path} has no BodyPartExamined column and no "
                                  "caption anatomy in its card")
            if name in COLUMNS and name != "body_part" and column not in series.columns:
                raise ConfigError(f"prompt template field {name!r}: {prepared.path} has no {column!r} column in series.parquet")
            if name == "attributes" and "contrast" not in series.columns:
                raise ConfigError(f"prompt template field 'attributes' needs the contrast class: {prepared.path} has no 'contrast' column")
            if name == "structures" and not [k for k in self.labels if k > 0]:
                raise ConfigError(f"prompt template field 'structures' needs mask labels: {prepared.path} has none "
                                  "(prepare it with masks, or drop '{structures}' from the template)")
        self._cache: dict[str, dict[str, Any]] = {}

    def fields(self, series_id: str) -> dict[str, Any]:
        """The metadata field values of one series (times in ms), before structures."""
        found = self._cache.get(series_id)
        if found is not None:
            return found
        row = self.prepared.series.iloc[self._rows[series_id]]
        out: dict[str, Any] = {}
        for name, (column, kind) in COLUMNS.items():
            value = row.get(column) if column in row.index else None
            if _written(value) is None:
                out[name] = None
            elif kind == "ms":
                out[name] = f"{float(value) * 1000:.0f}"
            elif kind == "lower":
                out[name] = str(value).strip().lower()
            elif kind == "modality":
                out[name] = MODALITY_WORDS.get(str(value), str(value))
            elif kind == "number":
                out[name] = f"{float(value):.4g}"
            else:
                out[name] = str(value)
        out["body_part"] = out["body_part"] or self.anatomy
        self._cache[series_id] = out
        return out

    def check(self, series_ids: Iterable[str]) -> None:
        """ConfigError when a template field's value is required but missing (an attributes entry for a
        contrast the attributes table lacks)."""
        if "attributes" not in self.template.fields:
            return
        contrasts = sorted({str(self.fields(s)["contrast"]) for s in set(series_ids)})
        missing = [c for c in contrasts if c not in self.template.attributes]
        if missing:
            raise ConfigError(f"prompt template field 'attributes': no entry for contrast(s) {', '.join(missing)} in the "
                              f"attributes table (has {', '.join(sorted(self.template.attributes))}); add them to a copy of "
                              f"{PACKAGED.name} and pass it with --prompts.attributes")

    def structure_names(self, present: Iterable[int]) -> list[str]:
        """Names of the present label ids (background left out), in label order."""
        return [self.labels[i] for i in sorted(present) if i > 0 and i in self.labels]

    def prompt(self, series_id: str, present: Iterable[int] = ()) -> str:
        """The prompt of an item of ``series_id`` whose mask holds the labels ``present``."""
        return self.template.render({**self.fields(series_id), "structures": self.structure_names(present)})

    def typical_fields(self, series_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Per contrast class of ``series_ids``: the median TE/TR/TI (ms) and flip angle and the most common
        modality and body part, for writing a target-modality prompt without a dataset (stored in bundles)."""
        from collections import Counter

        import numpy as np

        by_contrast: dict[str, list[dict[str, Any]]] = {}
        for sid in set(series_ids):
            fields = self.fields(sid)
            by_contrast.setdefault(str(fields["contrast"]), []).append(fields)
        out: dict[str, dict[str, Any]] = {}
        for contrast, rows in sorted(by_contrast.items()):
            typical: dict[str, Any] = {}
            for name in ("echo_time", "repetition_time", "inversion_time", "flip_angle"):
                values = [float(r[name]) for r in rows if r[name] is not None]
                number = "{:.0f}" if name != "flip_angle" else "{:.4g}"  # as :meth:`fields` writes them
                typical[name] = number.format(float(np.median(values))) if values else None
            for name in ("modality", "body_part"):
                found = Counter(r[name] for r in rows if r[name] is not None).most_common(1)
                typical[name] = found[0][0] if found else None
            out[contrast] = typical
        return out
