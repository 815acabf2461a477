"""Zero-shot metrics on the validation split, so that a CLIP run keeps the checkpoint that is best at its task.

Retrieval rank on a small validation split plateaus early and then wanders, so the checkpoint it picks is
close to a random one among plateau checkpoints (issue #14). With ``--val_zeroshot.prompts`` the CLIP task
also scores every validation pass zero-shot, exactly as ``radlens evaluate zeroshot`` scores the test split:

- present/absent pair prompts (``ctrate_reports``, ...): P(present) per finding, averaged over the items of a
  scan (slices, reconstructions); ``val/zeroshot_auroc`` is the mean AUROC over the findings that have both
  a positive and a negative validation scan;
- class prompts (``mri_contrast_captions`` with ``--val_zeroshot.label_column contrast``): P(class) averaged
  over each series' slices; ``val/zeroshot_bacc`` is the balanced accuracy over the series whose class has
  prompts.

The prompt embeddings are encoded with the current weights at every validation (the text tower may be
training). Name the metric as ``--trainer.monitor`` to choose the best checkpoint by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.models.prompts import check_findings, load_class_prompts, load_prompts, read_prompt_spec
from radlens.models.zeroshot import ClassZeroShotClassifier, ZeroShotClassifier, dataset_caption_config

if TYPE_CHECKING:
    from radlens.data.datasets import ClipDataset
    from radlens.models.clip import CLIPModel

METRICS = {"pairs": "zeroshot_auroc", "classes": "zeroshot_bacc"}


@dataclass
class ZeroShotValConfig:
    """Zero-shot scoring of every validation pass (logged as val/zeroshot_auroc or val/zeroshot_bacc).

    Attributes:
        prompts: a packaged prompt set or YAML prompt file; present/absent pairs give val/zeroshot_auroc,
            a classes-mode set (with label_column) val/zeroshot_bacc; empty: no zero-shot validation.
        label_column: classes mode: the series column holding each series' true class (e.g. contrast).
    """

    prompts: str | None = None
    label_column: str | None = None


class ZeroShotValidation:
    """Scores validation image embeddings zero-shot; called by :class:`radlens.train.clip_task.ClipTask`.

    Probabilities are aggregated as ``radlens evaluate zeroshot`` does (slices -> series -> scan), so the
    logged metric is what that command reports for the validation split.
    """

    def __init__(self, val_set: ClipDataset, cfg: ZeroShotValConfig) -> None:
        if not cfg.prompts:
            raise ConfigError("val_zeroshot.prompts is empty")
        ds, table = val_set.prepared, val_set.table
        self.mode = read_prompt_spec(cfg.prompts)[2]
        self.metric = METRICS[self.mode]
        self.items = table[["series_id"]].assign(scan_id=table["scan_id"] if "scan_id" in table.columns else table["series_id"])
        if self.mode == "pairs":
            if cfg.label_column:
                raise ConfigError(f"val_zeroshot.label_column needs a classes-mode prompt set; {cfg.prompts!r} holds pairs")
            self.pairs = load_prompts(cfg.prompts)
            check_findings(self.pairs, ds.card.get("findings", []), cfg.prompts)
            labels = table[list(self.pairs.findings)].astype(np.float64).where(lambda t: t.isin((0.0, 1.0)))
            self.truth = labels.groupby(self.items["scan_id"].to_numpy(), sort=False).first()  # unknown: NaN
            return
        if not cfg.label_column:
            raise ConfigError(f"prompt set {cfg.prompts!r} is a classes-mode set: give val_zeroshot.label_column")
        if cfg.label_column not in table.columns:
            raise InputError(ds.path / "series.parquet", f"no column {cfg.label_column!r} for val_zeroshot.label_column")
        prompts = load_class_prompts(cfg.prompts, dataset_caption_config(ds))
        names = table[cfg.label_column].astype("string").str.strip().fillna("")
        # As `evaluate zeroshot`: the softmax runs over the prompt classes present in the split.
        present = [c for c in prompts.classes if c in set(names)]
        if len(present) < 2:
            raise InputError(ds.path / "series.parquet", f"the validation split has {len(present)} of the classes of "
                                                         f"{cfg.prompts!r} in column {cfg.label_column!r}; need at least 2")
        self.classes = prompts.subset(present)
        self.keep = names.isin(present).to_numpy()
        codes = names.map({c: i for i, c in enumerate(self.classes.classes)})
        self.truth = codes[self.keep].groupby(self.items["series_id"].to_numpy()[self.keep], sort=False).first()

    def __call__(self, model: CLIPModel, embeddings: np.ndarray, index: np.ndarray) -> dict[str, float]:
        """The zero-shot metric of the validation items ``index`` (positions in the split) with ``embeddings``."""
        from radlens.metrics.findings import aggregate_scans, mean_auroc

        if self.mode == "pairs":
            names = list(self.pairs.findings)
            table = self.items.iloc[index].reset_index(drop=True)
            table[names] = ZeroShotClassifier(model, self.pairs).probabilities(embeddings)
            per_series = aggregate_scans(table, names, by="series_id", keep=("scan_id",))
            scores = aggregate_scans(per_series, names, by="scan_id", keep=()).set_index("scan_id")
            return {self.metric: mean_auroc(self.truth.loc[scores.index].to_numpy(), scores[names].to_numpy())}
        names = list(self.classes.classes)
        keep = self.keep[index]
        table = self.items.iloc[index[keep]].reset_index(drop=True)
        if table.empty:
            return {self.metric: float("nan")}
        table[names] = ClassZeroShotClassifier(model, self.classes).probabilities(embeddings[keep])
        scores = aggregate_scans(table, names, by="series_id", keep=()).set_index("series_id")
        predicted = scores[names].to_numpy().argmax(axis=1)
        truth = self.truth.loc[scores.index].to_numpy()
        # Balanced accuracy: mean recall over the classes present (sklearn's definition, without its warnings).
        return {self.metric: float(np.mean([np.mean(predicted[truth == c] == c) for c in np.unique(truth)]))}
