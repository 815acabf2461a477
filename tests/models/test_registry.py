"""Registry: every named config validates and builds (big ones on the meta device), user configs, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from radlens.errors import ConfigError, InputError
from radlens.models.registry import BUILTIN_DIR, build_model, config_files, count_params, get_config, list_models

REQUIRED = {"tiny-vit2d", "tiny-vit3d", "mrclip-vit-b16", "m3d-vit3d", "ctclip-vit3d"}


def test_required_configs_are_registered() -> None:
    assert REQUIRED <= set(config_files())


@pytest.mark.parametrize("name", sorted(p.stem for p in BUILTIN_DIR.glob("*.json")))
def test_every_config_validates_and_counts_params_without_weights(name: str) -> None:
    from radlens.models.components import kinds

    config = get_config(name)
    assert config["name"] == name and config["kind"] in kinds()
    params = count_params(config)
    parts = {k: v for k, v in params.items() if k != "total"}
    assert set(parts) == {k for k, v in config.items() if isinstance(v, dict) and "kind" in v}  # one per nested part
    if config["kind"] == "clip":
        assert params["image"] > 1e5
    if all(v.get("kind") != "pretrained" for v in config.values() if isinstance(v, dict)):  # hub BERT: no config offline
        assert params["total"] > sum(parts.values())


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


def test_bad_configs_fail_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown model 'vit-huge'"):
        build_model("vit-huge")
    config = get_config("tiny-vit2d")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) image\.patch for kind 'vit'; allowed: .*\bpatch_size\b"):
        build_model({**config, "image": {**config["image"], "patch": 8}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) temperature for kind 'clip'; allowed: embed_dim, "):
        build_model({**config, "temperature": 0.1})
    with pytest.raises(ConfigError, match="unknown component kind 'vmamba'"):
        build_model({**config, "image": {"kind": "vmamba"}})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**config, "image": {**config["image"], "input_shape": [60, 64]}}))
    with pytest.raises(InputError, match="bad.json: .*not divisible by patch_size"):
        build_model(str(bad))
    (tmp_path / "typo.json").write_text(json.dumps({"kind": "resnet", "input_shape": [32, 32], "dept": 10}))
    with pytest.raises(InputError, match=r"typo.json: unknown key\(s\) dept for kind 'resnet'; allowed: depth, "):
        get_config(str(tmp_path / "typo.json"))
    monkeypatch.setenv("RADLENS_MODEL_CONFIGS", str(tmp_path / "configs"))
    with pytest.raises(InputError, match="RADLENS_MODEL_CONFIGS names a folder that does not exist"):
        config_files()
    (tmp_path / "configs").mkdir()
    shutil.copy(bad, tmp_path / "configs" / "my-bad.json")  # a registry name: the error names its file
    with pytest.raises(InputError, match=r"configs/my-bad.json: .*not divisible by patch_size"):
        build_model("my-bad")
    (tmp_path / "configs" / "list.json").write_text("[1]")
    with pytest.raises(InputError, match="list.json: a model config must be a JSON object"):
        get_config("list")


def test_registry_configs_of_any_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radlens.models.clip import CLIPModel
    from radlens.models.image import ResNetEncoder

    (tmp_path / "my-res.json").write_text(json.dumps({"kind": "resnet", "input_shape": [32, 32], "depth": 10,
                                                      "description": "a 2D ResNet-10"}))
    legacy = {k: v for k, v in get_config("tiny-vit2d").items() if k not in ("kind", "name")}
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))  # no kind, image + text: a CLIP config
    monkeypatch.setenv("RADLENS_MODEL_CONFIGS", str(tmp_path))
    model = build_model("my-res")
    assert isinstance(model, ResNetEncoder) and model.config["depth"] == 10 and model.input_shape == (32, 32)
    assert get_config("legacy")["kind"] == "clip" and isinstance(build_model("legacy", texts=["axial"]), CLIPModel)
    assert count_params(get_config("my-res")) == {"total": sum(p.numel() for p in model.parameters())}
    rows = {row["name"]: row for row in list_models()}
    assert rows["my-res"]["kind"] == "resnet" and rows["my-res"]["family"] == "image encoder"
    assert rows["my-res"]["input_shape"] == [1, 32, 32] and rows["my-res"]["description"] == "a 2D ResNet-10"
    assert rows["legacy"]["kind"] == "clip" and rows["legacy"]["error"] is None


def test_cli_lists_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from radlens.cli import main

    (tmp_path / "my-res.json").write_text(json.dumps({"kind": "resnet", "input_shape": [32, 32], "depth": 10}))
    (tmp_path / "broken.json").write_text('{"kind": "resnet", ')
    (tmp_path / "bad-value.json").write_text(json.dumps({"kind": "resnet", "input_shape": [32, 32], "depth": 7}))
    monkeypatch.setenv("RADLENS_MODEL_CONFIGS", str(tmp_path))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    out = "\n".join(lines)
    for name in REQUIRED:
        assert name in out
    assert "1x256x256x32" in out and "MiniLM" in out
    row = {line.split()[0]: line for line in lines if line.strip()}
    assert row["my-res"].split()[1:3] == ["resnet", "1x32x32"]
    assert "invalid: " in row["broken"] and "broken.json: not a readable JSON model config" in row["broken"]
    assert "invalid: " in row["bad-value"] and "bad-value.json: no MONAI resnet7" in row["bad-value"]
    kinds_line = next(line for line in lines if line.startswith("component kinds: "))
    for family, kind in [("image encoder", "gated_cnn, resnet, swin, vit"), ("text tower", "minilm, pretrained, scratch"), ("clip", "clip"),
                         ("probe", "classfine"), ("report labeller", "report_labeller")]:
        assert f"{family}: {kind}" in kinds_line


def test_registry_and_cli_listing_do_not_import_torch_at_import_time() -> None:
    import subprocess
    import sys

    code = "import sys, radlens.models, radlens.losses, radlens.models.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
