"""Zero-shot multi-class classification (``mode: classes`` prompt files): P(class | image) by softmax.

For mutually exclusive classes held in one categorical column (e.g. ``contrast`` written by the
BIDS importer), each class has one or more prompts; their text embeddings are averaged and
re-normalised once per model (:class:`ClassZeroShotClassifier`, a (C, D) tensor), and an image
costs one image pass plus a (D, C) product; P(class | image) is the softmax over the classes at
the model's own temperature (``logit_scale``).

A model trained on metadata captions (MR-CLIP) has never read "A T1-weighted MRI."; its prompts
must be captions in its training template. A prompt may therefore give caption *fields* instead
of text; they are rendered with :mod:`radlens.prepare.captions` and the evaluated dataset's caption
config, every field not given reading ``NONE`` (in distribution: training drops fields to NONE)::

    name: mri-contrast-captions
    mode: classes
    classes:
      T1w:
        - fields: {SeriesDescription: t1_se_tra}
        - fields: {ScanningSequence: [SE], EchoTime: 0.012, RepetitionTime: 0.5}   # times in seconds
      T2w:
        - "A T2-weighted MRI."                                                   # literal text
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.data.prepared import PreparedDataset
    from radlens.models.clip import CLIPModel
    from radlens.prepare.captions import CaptionConfig

_FILE_KEYS = {"name", "description", "mode", "classes"}
# Excluded-label key for series whose label column is empty.
MISSING = "(missing)"


@dataclass(frozen=True)
class ClassPrompts:
    """Per class, its prompt texts (rendered captions or literal strings; each a non-empty tuple)."""

    name: str
    classes: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]

    def subset(self, names: list[str]) -> ClassPrompts:
        """The prompts of ``names`` only, in that order."""
        return ClassPrompts(self.name, tuple(names), tuple(self.prompts[self.classes.index(n)] for n in names))


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
    from radlens.evaluate.zeroshot import read_prompt_spec
    from radlens.prepare.captions import CaptionConfig

    cfg = caption or CaptionConfig()
    path, spec, mode = read_prompt_spec(name_or_path)
    if mode != "classes":
        reason = "not a 'mode: classes' prompt file (present/absent pairs are evaluated without --label_column)"
        raise InputError(path, reason)
    unknown = sorted(set(spec) - _FILE_KEYS)
    if unknown:
        raise InputError(path, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FILE_KEYS))}")
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


class ClassZeroShotClassifier:
    """P(class | image) for image embeddings, from class embeddings encoded once.

    ``text_embeddings`` is the cached (C, D) tensor, each row the re-normalised mean of the
    class's prompt embeddings; probabilities are ``softmax(logit_scale * image @ text.T)``.
    """

    def __init__(self, model: CLIPModel, prompts: ClassPrompts, batch_size: int = 64) -> None:
        import torch

        from radlens.evaluate.zeroshot import encode_prompt_groups

        self.model, self.prompts, self.classes = model, prompts, prompts.classes
        with torch.inference_mode():
            self.text_embeddings = encode_prompt_groups(model, prompts.prompts, batch_size)
            self.logit_scale = float(model.logit_scale)
        self._weights = self.logit_scale * self.text_embeddings.double().cpu().numpy().T

    def probabilities(self, image_embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, D) L2-normalised image embeddings -> (B, C) class probabilities (rows sum to 1)."""
        from scipy.special import softmax

        emb = image_embeddings.detach().cpu().numpy() if hasattr(image_embeddings, "detach") else image_embeddings
        return softmax(np.asarray(emb, dtype=np.float64) @ self._weights, axis=1)

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """(B, C_in, *spatial) model-ready images -> (B, C) class probabilities: one image pass."""
        import torch

        with torch.inference_mode():
            return self.probabilities(self.model.encode_image(images))


def dataset_caption_config(ds: PreparedDataset) -> CaptionConfig:
    """The caption config the dataset's captions were made with (its card), else MR-CLIP's default."""
    from radlens.prepare.captions import CaptionConfig

    values = (ds.card.get("config") or {}).get("caption")
    if not isinstance(values, dict):
        return CaptionConfig()
    try:
        return CaptionConfig(**values)
    except (TypeError, ConfigError) as err:
        raise InputError(ds.path / "dataset.json", f"config.caption is not a caption config ({err})") from err


def series_class_labels(
    ds: PreparedDataset, column: str, split: str, classes: tuple[str, ...]
) -> tuple[pd.Series, dict[str, int]]:
    """(label per series_id of ``split`` whose label is one of ``classes``, {excluded label: count}).

    Series with an empty label or a label that has no prompts cannot be scored and are excluded.
    """
    from pandas.api.types import is_numeric_dtype

    series = ds.series[ds.series["split"] == split]
    if column not in series.columns:
        available = ", ".join(c for c in series.columns if not is_numeric_dtype(series[c])) or "none"
        reason = f"no column {column!r} for the class labels (text columns: {available})"
        raise InputError(ds.path / "series.parquet", reason)
    labels = series.set_index("series_id")[column]
    text = labels.where(labels.notna(), MISSING).astype(str).str.strip().replace("", MISSING)
    keep = text.isin(classes)
    return text[keep], {str(k): int(v) for k, v in text[~keep].value_counts().items()}


def series_class_probabilities(
    ds: PreparedDataset,
    classifier: ClassZeroShotClassifier,
    series_ids: pd.Index,
    split: str,
    batch_size: int,
    device: str,
) -> pd.DataFrame:
    """One row per series in ``series_ids``: ``series_id, patient_id`` and P(class) per class.

    2D datasets: the slices' probabilities averaged per series.
    """
    from radlens.evaluate.embed import embed_items, item_table
    from radlens.evaluate.metrics import aggregate_scans

    items = item_table(ds, split)
    items = items[items["series_id"].isin(series_ids)].reset_index(drop=True)
    probs = classifier.probabilities(embed_items(ds, classifier.model, items, batch_size, device))
    names = list(classifier.classes)
    table = items[["series_id", "patient_id"]].copy()
    table[names] = probs
    return aggregate_scans(table, names, by="series_id", keep=("patient_id",))


def zeroshot_classes(
    bundle: str, prepared: str, out: str, split: str, prompts: str, label_column: str,
    n_bootstrap: int, seed: int, batch_size: int, device: str, config: dict[str, Any],
) -> int:
    """The classes mode of ``radlens evaluate zeroshot`` (see :func:`radlens.evaluate.zeroshot.zeroshot`).

    Every input is checked before the model is loaded. Writes OUT/predictions.csv (series_id,
    patient_id, P(class) per evaluated class, predicted, true), metrics.json, confusion.png and
    run.json at once.
    """
    from radlens.data.prepared import PreparedDataset
    from radlens.evaluate.embed import check_compatible, resolve_model, run_info, staged_output
    from radlens.evaluate.multiclass import SUMMARY_METRICS, confusion_figure, evaluate_classes
    from radlens.prepare.dataset import write_json_atomic

    ds = PreparedDataset(prepared)
    prompt_set = load_class_prompts(prompts, dataset_caption_config(ds))
    if ds.split(split).empty:
        raise InputError(prepared, f"split {split!r} is empty")
    labels, excluded = series_class_labels(ds, label_column, split, prompt_set.classes)
    present = [c for c in prompt_set.classes if c in set(labels)]
    if len(present) < 2:
        reason = (f"split {split!r} has {len(present)} of the prompt classes {list(prompt_set.classes)} in column "
                  f"{label_column!r} (labels found: {sorted(set(labels) | set(excluded))}); need at least 2")
        raise InputError(ds.path / "series.parquet", reason)
    absent = [c for c in prompt_set.classes if c not in present]
    prompt_set = prompt_set.subset(present)
    model = resolve_model(bundle)
    check_compatible(model, ds)
    classifier = ClassZeroShotClassifier(model, prompt_set)
    table = series_class_probabilities(ds, classifier, labels.index, split, batch_size, device)
    probs = table[present].to_numpy()
    table["predicted"] = np.asarray(present)[probs.argmax(axis=1)]
    table["true"] = labels.loc[table["series_id"]].to_numpy()
    y_true = np.array([present.index(t) for t in table["true"]])
    metrics = evaluate_classes(y_true, probs, table["patient_id"].to_numpy(), present, n_bootstrap, seed)
    metrics.update(
        mode="classes", split=split, prompts=prompt_set.name, label_column=label_column, unit="series",
        n_series=len(table), classes=present, classes_absent=absent, excluded=excluded,
        prompt_texts=dict(zip(present, (list(t) for t in prompt_set.prompts))),
    )
    if absent:
        metrics["note"] = (f"prompt classes {absent} do not occur in split {split!r}: "
                           f"the softmax and metrics use the {len(present)} present classes")
    with staged_output(out) as tmp:
        table.to_csv(tmp / "predictions.csv", index=False)
        write_json_atomic(tmp / "metrics.json", metrics)
        confusion_figure(np.asarray(metrics["confusion_matrix"]["counts"]), present, tmp / "confusion.png")
        write_json_atomic(tmp / "run.json", run_info("evaluate zeroshot", config, seed))
    shown = {k: "n/a" if metrics[k] is None else f"{metrics[k]:.3f}" for k in SUMMARY_METRICS}
    print(f"{len(table)} series, {len(present)} classes: accuracy {shown['accuracy']} (chance "
          f"{metrics['chance']['accuracy']:.3f}), balanced accuracy {shown['balanced_accuracy']} (chance "
          f"{1 / len(present):.3f}), macro AUROC {shown['macro_auroc']} -> {out}")
    return 0
