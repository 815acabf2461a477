"""What the generative training commands share: the frozen text tower from its three sources, the slices check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from radlens.errors import InputError
from radlens.models.bundle import save_bundle
from radlens.models.components import build
from radlens.train.generative import open_slices, text_tower

CLIP = {"kind": "clip", "embed_dim": 8,
        "image": {"kind": "vit", "input_shape": [16, 16], "patch_size": [8, 8], "hidden_size": 16, "mlp_dim": 32,
                  "num_layers": 1, "num_heads": 2},
        "text": {"kind": "scratch", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
                 "vocab_size": 300, "context_length": 64}}


def test_the_text_tower_comes_frozen_from_minilm_a_bert_folder_or_a_clip_bundle(tmp_path: Path) -> None:
    from radlens.models.text_tower import minilm_path

    minilm = text_tower("minilm")
    assert minilm.config["kind"] == "minilm" and minilm.width == 384
    folder = text_tower(minilm_path())  # any BERT-family folder
    assert folder.config["kind"] == "pretrained" and folder.width == 384
    clip = build(CLIP, texts=["T1w brain MRI, grey matter", "T2w brain MRI, white matter"])
    save_bundle(clip, tmp_path / "clip")
    tower = text_tower(str(tmp_path / "clip"))
    assert tower.config == clip.config["text"] and tower.width == 16
    for t in (minilm, folder, tower):
        assert not any(p.requires_grad for p in t.parameters()) and not t.training
    batch = tower.tokenize(["T1w brain MRI"])
    assert torch.equal(tower.encode_tokens(**batch)[0], clip.text.eval().encode_tokens(**batch)[0])
    save_bundle(build({"kind": "abmil", "in_dim": 4, "hidden": 2}), tmp_path / "mil")
    with pytest.raises(InputError, match="a abmil bundle has no text tower"):
        text_tower(str(tmp_path / "mil"))
    with pytest.raises(InputError, match="not a text tower: use 'minilm'"):
        text_tower(str(tmp_path / "nothing"))


def test_only_2d_slices_of_one_shape_train(tmp_path: Path) -> None:
    from support.prepared_generation import write_generation_prepared

    root = write_generation_prepared(tmp_path / "p", patients={"train": 1})
    assert open_slices(root).card["array_shape"] == [32, 32]
    card = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**card, "array_shape": None}))
    with pytest.raises(InputError, match="slices of different shapes"):
        open_slices(root)
    (root / "dataset.json").write_text(json.dumps({**card, "dims": 3}))
    with pytest.raises(InputError, match="prepare the dataset with --dims 2"):
        open_slices(root)
