"""Bundles: save -> load round trip offline, atomic writes, safetensors only, name/folder/hub dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from radlens.errors import ConfigError, InputError
from radlens.models.bundle import load_model, save_bundle

PREPROCESSING = {"spacing": [1.0, 1.0], "shape": [64, 64], "intensity": "MRI percentile (0.5, 99.5) -> [0, 1]"}


def test_save_load_gives_identical_embeddings_offline(tiny2d, captions, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_bundle(tiny2d, tmp_path / "bundle", PREPROCESSING, extra={"epoch": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "text"]
    assert list(tmp_path.iterdir()) == [folder]  # no temp folder left behind
    loaded = load_model(folder)
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), tiny2d.encode_image(images))
        b1, b2 = tiny2d.tokenize(captions), loaded.tokenize(captions)
        assert torch.equal(b1["input_ids"], b2["input_ids"])
        assert torch.equal(loaded.encode_text(**b2), tiny2d.encode_text(**b1))
    assert loaded.preprocessing == PREPROCESSING
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"]["name"] == "tiny-vit2d" and config["extra"] == {"epoch": 3}
    assert config["tokenizer"]["context_length"] == 128 and config["radlens_version"]


def test_saving_over_a_bundle_replaces_it(tiny2d, tmp_path: Path) -> None:
    folder = save_bundle(tiny2d, tmp_path / "b", {"v": 1})
    save_bundle(tiny2d, folder, {"v": 2})
    assert load_model(folder).preprocessing == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_registry_name_gives_fresh_model() -> None:
    model = load_model("tiny-vit2d")
    assert model.config["name"] == "tiny-vit2d"


def test_bad_bundles_and_names(tiny2d, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_bundle(tiny2d, tmp_path / "b", {})
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(b"not loaded")  # a pickle is never a fallback
    with pytest.raises(InputError, match="no model.safetensors"):
        load_model(folder)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="not a radlens CLIP bundle"):
        load_model(tmp_path / "other")
    with pytest.raises(ConfigError, match="not a bundle folder, a registry name"):
        load_model("no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="Hugging Face Hub"):
        load_model("someone/not-cached-bundle")
