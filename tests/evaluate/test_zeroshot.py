"""Zero-shot detection: cached prompt embeddings, probabilities, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_zeroshot import FINDINGS, tiny_model, write_bundle, write_prepared

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.evaluate.zeroshot import ZeroShotClassifier, zeroshot
from radlens.models.prompts import PromptSet, load_prompts


def _prompts() -> PromptSet:
    return PromptSet(
        "t", tuple(FINDINGS),
        (("Cardiomegaly is present.", "The heart is enlarged."), ("Lung nodule is present.",)),
        (("Cardiomegaly is not present.",), ("Lung nodule is not present.", "No nodule.")),
    )


def test_prompt_embeddings_computed_once(monkeypatch):
    model = tiny_model()
    calls = []
    real = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda ids, mask: calls.append(len(ids)) or real(ids, mask))
    clf = ZeroShotClassifier(model, _prompts())
    assert clf.text_embeddings.shape == (2, 2, model.embed_dim)
    assert sum(calls) == 6 and len(calls) == 1  # every phrasing once, in one batch
    images = torch.randn(2, 1, 64, 64, 32)
    for _ in range(3):
        probs = clf.predict(images)
    assert len(calls) == 1 and probs.shape == (2, 2)
    assert ((probs > 0) & (probs < 1)).all()


def test_probabilities_match_direct_computation():
    model = tiny_model()
    clf = ZeroShotClassifier(model, _prompts())
    images = torch.randn(3, 1, 64, 64, 32)
    with torch.no_grad():
        img = model.encode_image(images)

        def side(texts):
            tok = model.tokenize(list(texts))
            return torch.nn.functional.normalize(model.encode_text(tok["input_ids"], tok["attention_mask"]).mean(0), dim=0)

        expected = np.zeros((3, 2))
        for f, (pos, neg) in enumerate(zip(_prompts().present, _prompts().absent)):
            logits = model.logit_scale * torch.stack([img @ side(pos), img @ side(neg)], dim=1)
            expected[:, f] = logits.softmax(dim=1)[:, 0].numpy()
    np.testing.assert_allclose(clf.predict(images), expected, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("ds") / "prepared")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "two.yaml"
    path.write_text("template: {present: ['{finding} is present.'], absent: ['{finding} is not present.']}\n"
                    "findings:\n  Cardiomegaly: {}\n  Lung nodule: {}\n")
    return path


def test_zeroshot_cli_end_to_end(prepared, bundle, prompt_file, tmp_path, capsys):
    out = tmp_path / "zs"
    argv = ["evaluate", "zeroshot", str(bundle), str(prepared), str(out), "--split", "test",
            "--prompts", str(prompt_file), "--n_bootstrap", "30", "--seed", "7", "--device", "cpu"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".radlens-output.json", "metrics.json", "pr.png", "predictions.csv", "roc.png", "run.json"]
    pred = pd.read_csv(out / "predictions.csv")
    assert pred.columns.tolist() == ["scan_id", "patient_id", *FINDINGS]
    assert len(pred) == 6  # 7 test reconstructions, test_p1's two merged into one scan
    assert pred[FINDINGS].apply(lambda c: c.between(0, 1).all()).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_finding"]) == set(FINDINGS)
    card = metrics["per_finding"]["Cardiomegaly"]
    assert {"auroc", "auprc", "f1", "specificity", "threshold", "ci"} <= set(card)
    assert card["threshold_source"] in ("validation", "default") and metrics["threshold"]["split"] == "validation"
    assert metrics["bootstrap"]["n_requested"] == 30 and "macro" in metrics and "weighted" in metrics
    assert metrics["macro"]["over"] == FINDINGS and metrics["left_out"] == {} and metrics["n_cases"] == 6
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("zero-shot on test: macro AUROC ") and f"over {len(FINDINGS)} findings; 6 scans from" in line
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 7 and run["radlens_version"] and run["config"]["split"] == "test"
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_reconstructions_are_averaged_before_metrics(prepared, bundle, prompt_file, tmp_path):
    from radlens.evaluate.zeroshot import scan_probabilities
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    clf = ZeroShotClassifier(tiny_model(), load_prompts(prompt_file))
    scans = scan_probabilities(ds, clf, "test")
    recon = clf.predict(torch.from_numpy(np.stack([ds.array("test_p1_a_1"), ds.array("test_p1_a_2")])))
    row = scans.set_index("scan_id").loc["test_p1_a", FINDINGS].to_numpy(dtype=float)
    np.testing.assert_allclose(row, recon.mean(0), rtol=1e-5)


def test_unknown_finding_fails_before_any_work(prepared, bundle, tmp_path):
    out = tmp_path / "zs"
    with pytest.raises(InputError, match="not in the dataset's findings"):
        zeroshot(str(bundle), str(prepared), str(out), prompts="ctrate")
    assert not out.exists()
    assert main(["evaluate", "zeroshot", str(bundle), str(prepared), str(out)]) == 2


def test_mismatched_bundle_preprocessing(prepared, prompt_file, tmp_path):
    shape = write_bundle(tmp_path / "b1", array_shape=[128, 128, 64])
    with pytest.raises(InputError, match="array_shape"):
        zeroshot(str(shape), str(prepared), str(tmp_path / "o1"), prompts=str(prompt_file))
    window = write_bundle(tmp_path / "b2", intensity="CT: HU clipped to [-1200, 600] -> 0,1")
    with pytest.raises(InputError, match="intensity"):
        zeroshot(str(window), str(prepared), str(tmp_path / "o2"), prompts=str(prompt_file))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_empty_split_and_bad_threshold_split(bundle, prompt_file, tmp_path):
    ds = write_prepared(tmp_path / "no-val", splits=("train", "test"))
    with pytest.raises(InputError, match="split 'validation' is empty"):
        zeroshot(str(bundle), str(ds), str(tmp_path / "o"), prompts=str(prompt_file))
    with pytest.raises(ConfigError, match="another split"):
        zeroshot(str(bundle), str(ds), str(tmp_path / "o"), prompts=str(prompt_file), threshold_split="test")
    assert not (tmp_path / "o").exists()


def test_unknown_labels_are_refused_before_any_work(bundle, prompt_file, tmp_path):
    ds = write_prepared(tmp_path / "ds")
    series = pd.read_parquet(ds / "series.parquet")
    series.loc[series["patient_id"] == "val_p2", "Lung nodule"] = -1
    series.to_parquet(ds / "series.parquet", index=False)
    with pytest.raises(InputError, match=r"\['Lung nodule'\] have unknown labels .* 'validation'"):
        zeroshot(str(bundle), str(ds), str(tmp_path / "o"), prompts=str(prompt_file))
    assert not (tmp_path / "o").exists()
