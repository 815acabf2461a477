"""``--shard i/n`` for ``radlens embed`` (joined by ``embed-merge``) and ``radlens extract bags`` (a rerun
without --shard writes the index): the same output as one run."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_clip import write_prepared

from radlens.cli import main
from radlens.errors import InputError
from radlens.evaluate.embed import embed
from radlens.evaluate.embed_shards import merge_embeddings

SHAPE = (16, 16)
VIT = {"kind": "vit", "input_shape": list(SHAPE), "patch_size": [8, 8], "hidden_size": 32, "mlp_dim": 64,
       "num_layers": 1, "num_heads": 2}
CLIP = {"kind": "clip", "image": VIT, "embed_dim": 24,
        "text": {"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 256, "context_length": 32}}


def _bundle(model: torch.nn.Module, folder: Path, prepared: Path) -> Path:
    from radlens.data.modules import preprocessing_from_card
    from radlens.models.bundle import save_bundle

    return save_bundle(model, folder, preprocessing_from_card(json.loads((prepared / "dataset.json").read_text())))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 2D prepared dataset (5 patients x 2 series x 3 slices), a tiny CLIP and a tiny ViT bundle for it."""
    from radlens.models.registry import build_model

    root = tmp_path_factory.mktemp("shards")
    prepared = write_prepared(root / "prep", shape=SHAPE, patients={"train": 3, "test": 2}, slices_per_series=3)
    torch.manual_seed(0)
    clip = _bundle(build_model(CLIP, texts=["a tiny vocabulary"]).eval(), root / "clip", prepared)
    vit = _bundle(build_model(VIT), root / "vit", prepared)
    return prepared, clip, vit


def test_embed_shards_joined_are_one_run(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    prepared, bundle, _ = setup
    embed(bundle=str(bundle), prepared=str(prepared), out=str(tmp_path / "one"), batch_size=8, device="cpu")
    for i in (2, 0):
        embed(bundle=str(bundle), prepared=str(prepared), out=str(tmp_path / "parts" / f"part-{i}"), batch_size=8, device="cpu",
              shard=f"{i}/3")
    assert main(["embed", str(bundle), str(prepared), str(tmp_path / "parts" / "part-1"), "--batch_size", "8", "--device", "cpu",
                 "--shard", "1/3"]) == 0
    sizes = [len(pd.read_parquet(tmp_path / "parts" / f"part-{i}" / "ids.parquet")) for i in range(3)]
    assert sizes == [8, 8, 14]  # 30 slices = 4 batches of 8 (the last of 6); a shard holds whole batches
    assert main(["embed-merge", str(tmp_path / "parts" / "part-*"), str(tmp_path / "joined")]) == 0
    for name in ("embeddings.npy", "ids.parquet"):
        assert (tmp_path / "joined" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    run = json.loads((tmp_path / "joined" / "run.json").read_text())
    assert run["command"] == "embed" and len(run["config"]["merged_from"]) == 3 and run["config"]["batch_size"] == 8
    with pytest.raises(InputError, match=r"shard\(s\) 1/3 missing"):
        merge_embeddings([tmp_path / "parts" / "part-0", tmp_path / "parts" / "part-2"], tmp_path / "x")
    with pytest.raises(InputError, match="not a shard"):
        merge_embeddings([tmp_path / "one"], tmp_path / "x")
    embed(bundle=str(bundle), prepared=str(prepared), out=str(tmp_path / "other"), batch_size=4, device="cpu", shard="1/3")
    with pytest.raises(InputError, match="differs in"):
        merge_embeddings([tmp_path / "parts" / "part-0", tmp_path / "other", tmp_path / "parts" / "part-2"], tmp_path / "x")


def test_extract_shards_then_one_run_writes_the_index(setup: tuple[Path, Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from radlens.evaluate.extract import extract_bags

    prepared, _, bundle = setup
    assert extract_bags(bundle=str(bundle), prepared=str(prepared), out=str(tmp_path / "one"), per="study", device="cpu") == 0
    out = tmp_path / "sharded"
    for i in range(2):
        assert extract_bags(bundle=str(bundle), prepared=str(prepared), out=str(out), per="study", device="cpu", shard=f"{i}/2") == 0
    assert not (out / "bags.csv").exists(), "the index is the unsharded run's"
    names = sorted(p.name for p in out.glob("*.h5"))
    assert names == sorted(p.name for p in (tmp_path / "one").glob("*.h5")) and len(names) == 5
    capsys.readouterr()
    assert extract_bags(bundle=str(bundle), prepared=str(prepared), out=str(out), per="study", device="cpu") == 0
    assert "5 of 5 bags already extracted" in capsys.readouterr().out
    index = pd.read_csv(out / "bags.csv").drop(columns="path")
    pd.testing.assert_frame_equal(index, pd.read_csv(tmp_path / "one" / "bags.csv").drop(columns="path"))
    for name in names:
        with h5py.File(out / name) as a, h5py.File(tmp_path / "one" / name) as b:
            np.testing.assert_allclose(a["feats"][()], b["feats"][()], rtol=1e-5, atol=1e-6)
