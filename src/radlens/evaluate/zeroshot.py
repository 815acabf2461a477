"""Zero-shot multi-finding detection: one present/absent prompt pair per finding, one image pass per scan.

CT-CLIP encodes "{finding} is present." / "{finding} is not present." together with the image
for every finding of every volume (18 text + 18 image passes per volume). Here the prompt
embeddings are computed once per model (:class:`ZeroShotClassifier`, an (F, 2, D) tensor) and each
scan costs one image pass plus an (F, 2, D) dot product. P(present) is the softmax over the pair
at the model's own temperature (``logit_scale``).

Prompt files (YAML; ``ctrate`` and ``mri_contrast`` ship with radlens)::

    name: ct-rate
    template: {present: ["{finding} is present."], absent: ["{finding} is not present."]}
    findings:
      Cardiomegaly: {}                                   # the template, {finding} = the name
      T2*w: {term: T2*-weighted}                          # {finding} = term
      Lung nodule: {present: [...], absent: [...]}        # own phrasings

Several phrasings of one side are averaged in embedding space and re-normalised. A prompt file
with ``mode: classes`` instead names mutually exclusive classes (one label column, softmax over
the classes): see :mod:`radlens.evaluate.zeroshot_classes`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch

    from radlens.models.clip import CLIPModel

Split = Literal["train", "validation", "test"]
SIDES = ("present", "absent")
MODES = ("pairs", "classes")
_FILE_KEYS = {"name", "description", "mode", "template", "findings"}
_FINDING_KEYS = {"term", "present", "absent"}


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


def packaged_prompt_files() -> dict[str, Path]:
    """Name -> YAML file of the prompt sets shipped in ``radlens/evaluate/prompts``."""
    folder = resources.files("radlens.evaluate") / "prompts"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


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


class ZeroShotClassifier:
    """P(finding present) for image embeddings, from prompt embeddings encoded once.

    ``text_embeddings`` is the cached (F, 2, D) tensor: [:, 0] present, [:, 1] absent, each the
    re-normalised mean of its phrasings. A softmax over two logits is the sigmoid of their
    difference, so the pair folds into one (D, F) matrix ``scale * (present - absent)`` and a
    volume costs one image pass plus one small matmul (numpy: no thread-pool start-up per call).
    """

    def __init__(self, model: CLIPModel, prompts: PromptSet, batch_size: int = 64) -> None:
        import torch

        self.model, self.prompts = model, prompts
        self.findings = prompts.findings
        with torch.inference_mode():
            self.text_embeddings = self._encode_prompts(batch_size)
            self.logit_scale = float(model.logit_scale)
        pair = self.text_embeddings.double().cpu().numpy()
        self._weights = self.logit_scale * (pair[:, 0] - pair[:, 1]).T

    def _encode_prompts(self, batch_size: int) -> torch.Tensor:
        """Encode every phrasing once (batched), then average per finding and side: (F, 2, D)."""
        groups = [side for pair in zip(self.prompts.present, self.prompts.absent) for side in pair]
        return encode_prompt_groups(self.model, groups, batch_size).reshape(len(self.findings), 2, -1)

    def probabilities(self, image_embeddings: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, D) L2-normalised image embeddings -> (B, F) P(present) = softmax over each pair."""
        import torch

        emb = image_embeddings.detach().cpu().numpy() if torch.is_tensor(image_embeddings) else image_embeddings
        margin = np.asarray(emb, dtype=np.float64) @ self._weights
        return 1.0 / (1.0 + np.exp(-margin))

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """(B, C, *spatial) model-ready images -> (B, F) P(present): one image pass."""
        import torch

        with torch.inference_mode():
            return self.probabilities(self.model.encode_image(images))


def scan_labels(ds: Any, findings: Sequence[str], split: str) -> Any:
    """0/1 labels of every scan of ``split`` (a DataFrame indexed by scan_id); unknown (-1) is an error.

    The reconstructions of a scan share its labels.
    """
    series = ds.series if "scan_id" in ds.series.columns else ds.series.assign(scan_id=ds.series["series_id"])
    table = series[series["split"] == split].groupby("scan_id", sort=False)[list(findings)].first()
    bad = [f for f in findings if not table[f].isin((0, 1)).all()]
    if bad:
        reason = f"finding column(s) {bad} have unknown labels (not 0/1) in split {split!r}"
        raise InputError(ds.path / "series.parquet", reason)
    return table.astype(np.int8)


def scan_probabilities(
    ds: Any, classifier: ZeroShotClassifier, split: str, batch_size: int = 4, device: str = "cpu"
) -> Any:
    """One row per scan of ``split``: ``scan_id, patient_id`` and P(present) per finding.

    Probabilities are averaged over the slices of a series (2D) and then over the
    reconstructions (series) of a scan, before any metric.
    """
    from radlens.evaluate.embed import embed_items, item_table
    from radlens.evaluate.metrics import aggregate_scans

    items = item_table(ds, split)
    if items.empty:
        raise InputError(ds.path, f"split {split!r} is empty")
    probs = classifier.probabilities(embed_items(ds, classifier.model, items, batch_size, device))
    names = list(classifier.findings)
    table = items[["series_id", "scan_id", "patient_id"]].copy()
    table[names] = probs
    per_series = aggregate_scans(table, names, by="series_id", keep=("scan_id", "patient_id"))
    return aggregate_scans(per_series, names, by="scan_id", keep=("patient_id",))


def zeroshot(
    bundle: str,
    prepared: str,
    out: str,
    split: Split = "test",
    prompts: str = "ctrate",
    findings: list[str] | None = None,
    label_column: str | None = None,
    threshold_split: Split = "validation",
    threshold_method: Literal["youden", "f1"] = "youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 4,
    device: str = "auto",
) -> int:
    """Zero-shot finding detection (or, with a ``mode: classes`` prompt file, classification) of a model bundle.

    Pairs mode writes OUT/predictions.csv (one row per scan: scan_id, patient_id, P(present) per
    finding), metrics.json (per finding, macro and prevalence-weighted; bootstrap CIs; thresholds
    and the split that chose them), roc.png, pr.png and run.json (config, radlens version, seed),
    all at once: nothing is written when an input is bad. Classes mode (``--label_column``) scores
    each series of the split against the classes of the prompt file and writes predictions.csv
    (P(class) per class, predicted, true), metrics.json (accuracy, balanced accuracy, macro
    one-vs-rest AUROC, per-class recall, confusion matrix, chance levels, bootstrap CIs),
    confusion.png and run.json (:mod:`radlens.evaluate.zeroshot_classes`).

    Args:
        bundle: model bundle folder, registry name or Hugging Face Hub id.
        prepared: prepared dataset folder (its card lists the finding columns).
        out: output folder (replaced as a whole when it exists).
        split: the split to evaluate.
        prompts: packaged prompt set (ctrate, mri_contrast, mri_contrast_captions) or a YAML prompt file.
        findings: evaluate only these findings of the prompt set (pairs mode).
        label_column: series column holding the true class (classes mode, required there).
        threshold_split: the split on which thresholds are chosen (never the evaluated one; pairs mode).
        threshold_method: youden (max TPR - FPR) or f1 (max F1 of the positive class).
        n_bootstrap: bootstrap resamples of patients for the 95% CIs.
        seed: bootstrap seed.
        batch_size: volumes per image-encoder pass.
        device: auto, cpu, cuda, cuda:1, ...
    """
    config = dict(locals())
    from radlens.data.prepared import SPLITS, PreparedDataset
    from radlens.evaluate.embed import check_compatible, resolve_model, run_info, staged_output
    from radlens.evaluate.figures import curve_figures
    from radlens.evaluate.metrics import evaluate_findings
    from radlens.prepare.dataset import write_json_atomic

    for name, value in (("split", split), ("threshold_split", threshold_split)):
        if value not in SPLITS:
            raise ConfigError(f"{name} must be one of {', '.join(SPLITS)}, got {value!r}")
    mode = read_prompt_spec(prompts)[2]
    if mode == "classes":
        from radlens.evaluate.zeroshot_classes import zeroshot_classes

        if not label_column:
            raise ConfigError(f"prompt set {prompts!r} is a classes-mode file: give --label_column (the true class)")
        if findings:
            raise ConfigError("--findings selects present/absent pairs; a classes-mode prompt file has none")
        return zeroshot_classes(bundle, prepared, out, split, prompts, label_column,
                                n_bootstrap, seed, batch_size, device, config)
    if label_column:
        raise ConfigError(f"--label_column needs a 'mode: classes' prompt file; {prompts!r} holds present/absent pairs")
    if threshold_split == split:
        raise ConfigError(f"thresholds must be chosen on another split than the evaluated one ({split!r})")
    if threshold_method not in ("youden", "f1"):
        raise ConfigError(f"threshold_method must be 'youden' or 'f1', got {threshold_method!r}")
    prompt_set = load_prompts(prompts)
    if findings:
        missing = [f for f in findings if f not in prompt_set.findings]
        if missing:
            raise ConfigError(f"findings {missing} have no prompts in {prompts!r} (it has {list(prompt_set.findings)})")
        prompt_set = prompt_set.subset(findings)
    ds = PreparedDataset(prepared)
    check_findings(prompt_set, ds.card.get("findings", []), prompts)
    for name in (split, threshold_split):
        if ds.split(name).empty:
            raise InputError(prepared, f"split {name!r} is empty")
    labels = {name: scan_labels(ds, prompt_set.findings, name) for name in (split, threshold_split)}
    model = resolve_model(bundle)
    check_compatible(model, ds)
    classifier = ZeroShotClassifier(model, prompt_set)
    names = list(prompt_set.findings)
    test = scan_probabilities(ds, classifier, split, batch_size, device)
    val = scan_probabilities(ds, classifier, threshold_split, batch_size, device)
    y_test = labels[split].loc[test["scan_id"]].to_numpy()
    y_val = labels[threshold_split].loc[val["scan_id"]].to_numpy()
    metrics = evaluate_findings(
        y_test, test[names].to_numpy(), test["patient_id"].to_numpy(), y_val, val[names].to_numpy(), names,
        threshold_method=threshold_method, threshold_split=threshold_split,
        n_bootstrap=n_bootstrap, seed=seed,
    )
    metrics.update(split=split, prompts=prompt_set.name, n_scans=len(test))
    with staged_output(out) as tmp:
        test.to_csv(tmp / "predictions.csv", index=False)
        write_json_atomic(tmp / "metrics.json", metrics)
        curve_figures(y_test, test[names].to_numpy(), names, tmp)
        write_json_atomic(tmp / "run.json", run_info("evaluate zeroshot", config, seed))
    macro = {k: "n/a" if metrics["macro"][k] is None else f"{metrics['macro'][k]:.3f}" for k in ("auroc", "auprc")}
    print(f"{len(test)} scans, {len(names)} findings: macro AUROC {macro['auroc']}, AUPRC {macro['auprc']} -> {out}")
    return 0
