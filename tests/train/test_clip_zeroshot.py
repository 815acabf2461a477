"""Zero-shot validation metrics of a CLIP run: equal to `evaluate zeroshot` on the validation split, and usable as the monitor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_clip import PROTOCOLS, caption, quick_trainer, write_prepared
from support.prepared_findings import FINDINGS, write_findings_prepared
from support.prepared_findings import tiny_model as tiny_findings_model

from radlens.data.datasets import ClipDataConfig, ClipDataset
from radlens.errors import ConfigError
from radlens.evaluate.embed import embed_items, item_table
from radlens.evaluate.zeroshot import zeroshot
from radlens.io.prepared import PreparedDataset
from radlens.models.bundle import save_bundle
from radlens.models.prompts import load_class_prompts
from radlens.models.registry import build_model
from radlens.train.clip import train_clip
from radlens.train.clip_zeroshot import ZeroShotValConfig, ZeroShotValidation
from radlens.train.config import LossConfig, OptimConfig

PAIRS = """name: two
template:
  present: ["{finding} is seen.", "There is {finding}."]
  absent: ["No {finding}."]
findings:
  Pleural effusion: {}
  Lung nodule: {}
"""
CONTRASTS = ["T1w", "T2w", "FLAIR"]  # support.prepared_clip's protocols 0, 1, 2


def _validation_scores(scorer: ZeroShotValidation, model: torch.nn.Module, ds: Path) -> dict[str, float]:
    """What the CLIP task logs: the scorer on the validation embeddings, items in shuffled order."""
    prepared = PreparedDataset(ds)
    items = item_table(prepared, "validation")
    embeddings = embed_items(prepared, model, items, 4, "cpu")
    order = np.random.default_rng(0).permutation(len(items))
    return scorer(model, embeddings[order], order)


def test_pairs_metric_equals_evaluate_zeroshot_on_the_validation_split(tmp_path: Path) -> None:
    ds = write_findings_prepared(tmp_path / "prep", patients={"train": 2, "validation": 10, "test": 4}, scans_per_patient=2)
    (tmp_path / "two.yaml").write_text(PAIRS)
    torch.manual_seed(0)
    texts = pd.read_parquet(ds / "series.parquet")["report_findings"].tolist()
    model = build_model(str(tiny_findings_model(tmp_path / "tiny.json")),
                        texts=[*texts, *(t.format(finding=f) for f in FINDINGS for t in ("{finding} is seen.", "There is {finding}.",
                                                                                            "No {finding}."))]).eval()
    scorer = ZeroShotValidation(ClipDataset(str(ds), "validation", "report_findings"),
                                ZeroShotValConfig(prompts=str(tmp_path / "two.yaml")))
    logged = _validation_scores(scorer, model, ds)

    card = json.loads((ds / "dataset.json").read_text())
    bundle = save_bundle(model, tmp_path / "bundle", {"dims": 3, "modality": "CT", "array_shape": card["array_shape"],
                                                      "dtype": "float32", "intensity": "synthetic"})
    zeroshot(str(bundle), str(ds), str(tmp_path / "zs"), split="validation", threshold_split="test",
             prompts=str(tmp_path / "two.yaml"), n_bootstrap=10, device="cpu")
    evaluated = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert evaluated["n_scans"] == 20  # two scans per patient, each scored on its own
    assert logged["zeroshot_auroc"] == pytest.approx(evaluated["macro"]["auroc"], abs=1e-9)


def _contrast_dataset(folder: Path) -> Path:
    write_prepared(folder, patients={"train": 2, "validation": 3, "test": 1}, n_protocols=3, slices_per_series=2)
    series = pd.read_parquet(folder / "series.parquet")
    series["contrast"] = [CONTRASTS[k] if s != "sub-003_p2" else "dwi" for s, k in zip(series["series_id"], series["label"])]
    series.to_parquet(folder / "series.parquet", index=False)
    return folder


def test_classes_metric_equals_evaluate_zeroshot_balanced_accuracy(tmp_path: Path) -> None:
    ds = _contrast_dataset(tmp_path / "prep")
    torch.manual_seed(1)
    texts = [caption(p) for p in PROTOCOLS] + [t for ts in load_class_prompts("mri_contrast_captions").prompts for t in ts]
    model = build_model("tiny-vit2d", texts=texts * 2).eval()
    preprocessing = {"dims": 2, "modality": "MR", "array_shape": [64, 64], "dtype": "float32", "intensity": "synthetic [0, 1]"}
    scorer = ZeroShotValidation(ClipDataset(str(ds), "validation"),
                                ZeroShotValConfig(prompts="mri_contrast_captions", label_column="contrast"))
    logged = _validation_scores(scorer, model, ds)

    bundle = save_bundle(model, tmp_path / "bundle", preprocessing)
    zeroshot(str(bundle), str(ds), str(tmp_path / "zs"), split="validation", prompts="mri_contrast_captions",
             label_column="contrast", n_bootstrap=10, device="cpu")
    evaluated = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert evaluated["n_series"] == 3 * 3 - 1  # the dwi series has no prompts, in both
    assert logged["zeroshot_bacc"] == pytest.approx(evaluated["balanced_accuracy"], abs=1e-9)


def test_monitoring_the_zeroshot_metric_keeps_its_best_checkpoint(tmp_path: Path) -> None:
    ds = write_findings_prepared(tmp_path / "prep", patients={"train": 16, "validation": 6})
    (tmp_path / "two.yaml").write_text(PAIRS)
    trainer = quick_trainer(max_steps=12, val_every_n_steps=4, monitor="val/zeroshot_auroc")
    run = train_clip(str(ds), str(tmp_path / "run"), ClipDataConfig(text_column="report_findings", batch_size=8),
                     model=str(tiny_findings_model(tmp_path / "tiny.json")), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                     trainer=trainer, loss=LossConfig(mode="findings", alpha=0.5),
                     val_zeroshot=ZeroShotValConfig(prompts=str(tmp_path / "two.yaml")))
    log = pd.concat(pd.read_csv(f) for f in (run / "logs" / "csv").glob("version_*/metrics.csv"))
    values = log.dropna(subset=["val/zeroshot_auroc"]).set_index("step")["val/zeroshot_auroc"]
    assert len(values) == 3 and values.between(0, 1).all()
    info = json.loads((run / "best" / "bundle.json").read_text())["extra"]
    assert info["monitor"] == "val/zeroshot_auroc" and info["score"] == pytest.approx(values.max())


@pytest.mark.parametrize(("cfg", "monitor", "message"), [
    (ZeroShotValConfig(), "val/zeroshot_auroc", "needs --val_zeroshot.prompts"),
    (ZeroShotValConfig(prompts="TWO"), "val/zeroshot_bacc", "does not fit prompt set"),
    (ZeroShotValConfig(prompts="mri_contrast_captions"), None, "give val_zeroshot.label_column"),
    (ZeroShotValConfig(prompts="TWO", label_column="contrast"), None, "needs a classes-mode prompt set"),
])
def test_zeroshot_validation_mistakes_are_refused_before_training(tmp_path: Path, cfg: ZeroShotValConfig,
                                                                 monitor: str | None, message: str) -> None:
    ds = write_findings_prepared(tmp_path / "prep", patients={"train": 4, "validation": 2})
    (tmp_path / "two.yaml").write_text(PAIRS)
    if cfg.prompts == "TWO":
        cfg = ZeroShotValConfig(prompts=str(tmp_path / "two.yaml"), label_column=cfg.label_column)
    with pytest.raises(ConfigError, match=message):
        train_clip(str(ds), str(tmp_path / "run"), ClipDataConfig(text_column="report_findings", batch_size=4),
                   model=str(tiny_findings_model(tmp_path / "tiny.json")),
                   trainer=quick_trainer(max_steps=2, monitor=monitor), val_zeroshot=cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
