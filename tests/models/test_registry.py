"""Registry: every named config validates and builds (big ones on the meta device), user configs, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radlens.errors import ConfigError, InputError
from radlens.models.registry import build_model, config_files, count_params, get_config, list_models

REQUIRED = {"tiny-vit2d", "tiny-vit3d", "mrclip-vit-b16", "m3d-vit3d", "ctclip-vit3d"}


def test_required_configs_are_registered() -> None:
    assert REQUIRED <= set(config_files())


@pytest.mark.parametrize("name", sorted(REQUIRED | {"resnet18-3d"}))
def test_every_config_validates_and_counts_params_without_weights(name: str) -> None:
    config = get_config(name)
    params = count_params(config)
    assert params["image"] > 1e5
    if config["text"]["kind"] != "pretrained":  # hub BERT: no config offline
        assert params["total"] > params["image"] + params["text"]


def test_big_configs_have_the_published_sizes() -> None:
    mrclip = count_params(get_config("mrclip-vit-b16"))
    assert 85e6 < mrclip["image"] < 87e6  # ViT-B/16 at 224, single channel, + projection
    assert 22e6 < mrclip["text"] < 23.5e6  # MiniLM-L6
    m3d = get_config("m3d-vit3d")["image"]
    tokens = [s // p for s, p in zip(m3d["input_shape"], m3d["patch_size"])]
    assert tokens[0] * tokens[1] * tokens[2] == 2048  # M3D-CLIP: 2048 patches + CLS
    ct = get_config("ctclip-vit3d")["image"]
    assert ct["input_shape"] == [480, 480, 240]


@pytest.mark.parametrize("name,shape", [("tiny-vit3d", (1, 64, 64, 32))])
def test_tiny_configs_build_fully(name: str, shape: tuple[int, ...]) -> None:
    import torch

    model = build_model(name).eval()
    assert model.input_shape == shape
    assert model.encode_image(torch.zeros(1, *shape)).shape == (1, 128)
    assert model.tokenize(["any text, even unseen words"])["input_ids"].shape[0] == 1


def test_user_config_folder_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = get_config("tiny-vit2d")
    config["image"]["num_layers"] = 1
    (tmp_path / "my-vit.json").write_text(json.dumps(config))
    monkeypatch.setenv("RADLENS_MODEL_CONFIGS", str(tmp_path))
    assert "my-vit" in config_files()
    assert "my-vit" in [row["name"] for row in list_models()]
    assert len(build_model("my-vit").image.blocks) == 1
    assert len(build_model(str(tmp_path / "my-vit.json")).image.blocks) == 1


def test_bad_configs_fail_before_building(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model 'vit-huge'"):
        build_model("vit-huge")
    config = get_config("tiny-vit2d")
    with pytest.raises(ConfigError, match="unknown key.*image.patch"):
        build_model({**config, "image": {**config["image"], "patch": 8}})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**config, "image": {**config["image"], "input_shape": [60, 64]}}))
    with pytest.raises(InputError, match="bad.json: .*not divisible by patch_size"):
        build_model(str(bad))


def test_cli_lists_models(capsys: pytest.CaptureFixture[str]) -> None:
    from radlens.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in REQUIRED:
        assert name in out
    assert "1x256x256x32" in out and "MiniLM" in out


def test_registry_and_cli_listing_do_not_import_torch_at_import_time() -> None:
    import subprocess
    import sys

    code = "import sys, radlens.models, radlens.losses, radlens.models.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
