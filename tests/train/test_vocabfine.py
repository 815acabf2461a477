"""VocabFine (``radlens train vocabfine``): the pair loss goes down and the result is a zero-shot-ready CLIP bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.prepared_findings import FINDINGS, base_bundle, quick_trainer, tiny_model, write_findings_prepared

from radlens.data.labelled import FindingDataConfig
from radlens.errors import InputError
from radlens.train.config import OptimConfig


def _pair_loss(bundle: Path, prepared: Path) -> float:
    """Mean present/absent cross-entropy of a bundle over the training split (eval mode, no dropout)."""
    from radlens.data.labelled import FindingDataset, collate_findings
    from radlens.io.prepared import PreparedDataset
    from radlens.models.bundle import load_bundle
    from radlens.train.vocabfine import prompt_set
    from radlens.train.vocabfine_task import VocabFineTask

    task = VocabFineTask(load_bundle(bundle), prompt_set(FINDINGS, None, prepared)).eval()
    ds = FindingDataset(PreparedDataset(prepared), "train", FINDINGS)
    with torch.no_grad():
        return float(task.step(collate_findings([ds[i] for i in range(len(ds))]), "val").loss)


def test_vocabfine_lowers_the_pair_loss_and_bundle_works_in_zeroshot(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import pandas as pd

    from radlens.evaluate.zeroshot import ZeroShotClassifier
    from radlens.models.bundle import load_bundle
    from radlens.train.vocabfine import prompt_set, train_vocabfine

    prepared = write_findings_prepared(tmp_path / "prep")
    base = base_bundle(tmp_path / "base", prepared, tiny_model(tmp_path / "tiny.json"))
    run = train_vocabfine(
        str(base), str(prepared), str(tmp_path / "run"), FindingDataConfig(batch_size=8), n_bootstrap=20,
        optim=OptimConfig(lr=3e-3, warmup_steps=2), trainer=quick_trainer(max_steps=30),
    )
    assert _pair_loss(run / "last", prepared) < _pair_loss(base, prepared) - 0.01
    model = load_bundle(run / "best")
    classifier = ZeroShotClassifier(model, prompt_set(FINDINGS, None, prepared))
    probs = classifier.predict(torch.randn(4, *model.input_shape))
    assert probs.shape == (4, len(FINDINGS)) and ((probs >= 0) & (probs <= 1)).all()
    # It ends as ClassFine and the labeller do: test metrics with thresholds chosen on validation, in eval/.
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["per_finding"]) == set(FINDINGS) and metrics["split"] == "test"
    assert metrics["threshold"]["split"] == "validation" and metrics["macro"]["over"]
    thresholds = json.loads((run / "best" / "bundle.json").read_text())["extra"]["vocabfine"]["thresholds"]
    assert {f: metrics["per_finding"][f]["threshold"] for f in FINDINGS} == thresholds
    predictions = pd.read_csv(run / "eval" / "predictions.csv")
    assert [f"score:{f}" for f in FINDINGS] == [c for c in predictions.columns if c.startswith("score:")]
    out = capsys.readouterr().out
    assert "VocabFine zero-shot on test: macro AUROC" in out and f"-> {run / 'eval'}" in out


def test_prompt_file_must_cover_the_findings(tmp_path: Path) -> None:
    from radlens.train.vocabfine import prompt_set

    assert prompt_set(["Pleural effusion"], "ctrate", tmp_path).present == (("Pleural effusion is present.",),)
    with pytest.raises(InputError, match="no prompts for finding"):
        prompt_set(["Pleural effusion", "Brain tumour"], "ctrate", tmp_path)
