"""ClassFine (``radlens train probe``): frozen encoder, a head that learns, a bundle that reloads, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.prepared_findings import FINDINGS, base_bundle, quick_trainer, tiny_model, write_findings_prepared

from radlens.data.labelled import FindingDataConfig
from radlens.errors import InputError
from radlens.train.config import OptimConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classfine")
    prepared = write_findings_prepared(root / "prep")
    return {"root": root, "prepared": prepared, "bundle": base_bundle(root / "base", prepared, tiny_model(root / "tiny.json"))}


@pytest.fixture(scope="module")
def run(setup: dict[str, Path]) -> Path:
    from radlens.train.classfine import train_classfine

    return train_classfine(
        str(setup["bundle"]), str(setup["prepared"]), str(setup["root"] / "run"), FindingDataConfig(batch_size=8),
        optim=OptimConfig(lr=1e-2, warmup_steps=2), trainer=quick_trainer(max_steps=30), n_bootstrap=20,
    )


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model" / "model.safetensors"))


def test_head_learns_a_separable_finding_with_validation_thresholds(run: Path) -> None:
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    effusion = metrics["per_finding"]["Pleural effusion"]
    assert effusion["auroc"] > 0.9
    assert effusion["threshold_source"] == "validation"
    assert metrics["bootstrap"]["unit"] == "patient"
    assert (run / "eval" / "predictions.csv").is_file()


def test_encoder_stays_frozen_and_bundle_reloads(run: Path, setup: dict[str, Path]) -> None:
    from radlens.evaluate.embed import resolve_model
    from radlens.models.bundle import load_model

    before, after = _weights(setup["bundle"]), _weights(run / "best")
    assert {f"clip.{k}" for k in before} == {k for k in after if k.startswith("clip.")}
    assert all(torch.equal(before[k], after[f"clip.{k}"]) for k in before)
    model = load_model(run / "best", kind="classfine")
    assert model.findings == FINDINGS and set(model.extra["classfine"]["thresholds"]) == set(FINDINGS)
    model.requires_grad_(False)  # a reloaded model is trainable as a whole; the encoder's weights are the base's
    logits = model(torch.zeros(3, *model.clip.input_shape))
    assert logits.shape == (3, len(FINDINGS))
    encoder = resolve_model(run / "best")  # zero-shot and embed take the ClassFine bundle's CLIP encoder
    assert encoder.embed_dim == model.clip.embed_dim and encoder.preprocessing == model.preprocessing


def test_train_encoder_fine_tunes_the_image_tower_only(setup: dict[str, Path]) -> None:
    from radlens.train.classfine import train_classfine

    run = train_classfine(
        str(setup["bundle"]), str(setup["prepared"]), str(setup["root"] / "finetune"), FindingDataConfig(batch_size=8),
        train_encoder=True, optim=OptimConfig(lr=1e-3, warmup_steps=2), trainer=quick_trainer(max_steps=20), n_bootstrap=20,
    )
    before, after = _weights(setup["bundle"]), _weights(run / "best")
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[f"clip.{k}"])}
    assert changed == {"image", "image_proj"}  # the text tower and the temperature stay as they were
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["per_finding"]["Pleural effusion"]["auroc"] > 0.9


def test_bad_input_fails_before_any_work(setup: dict[str, Path], tmp_path: Path) -> None:
    from radlens.train.classfine import train_classfine

    prepared, bundle = str(setup["prepared"]), str(setup["bundle"])
    with pytest.raises(InputError, match="unknown finding"):
        train_classfine(bundle, prepared, str(tmp_path / "a"), FindingDataConfig(findings=["Pleural efusion"]))
    wrong = base_bundle(tmp_path / "mr", setup["prepared"], tiny_model(tmp_path / "t.json"), modality="MR")
    with pytest.raises(InputError, match="modality"):
        train_classfine(str(wrong), prepared, str(tmp_path / "b"))
    no_val = write_findings_prepared(tmp_path / "noval", patients={"train": 8, "validation": 0, "test": 2})
    with pytest.raises(InputError, match="'validation' is empty"):
        train_classfine(bundle, str(no_val), str(tmp_path / "c"))
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
