"""Bundles: save -> load round trip offline, atomic writes, safetensors only, name/folder/run/hub dispatch,
and bad bundles refused with an InputError naming the file. (Every kind's round trip: test_components.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from radlens.errors import ConfigError, InputError
from radlens.models.bundle import load_bundle, load_model, resolve_bundle, save_bundle

PREPROCESSING = {"spacing": [1.0, 1.0], "shape": [64, 64], "intensity": "MRI percentile (0.5, 99.5) -> [0, 1]"}


def test_save_load_gives_identical_embeddings_offline(tiny2d, captions, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_bundle(tiny2d, tmp_path / "bundle", PREPROCESSING, extra={"epoch": 3})
    assert sorted(p.name for p in folder.iterdir()) == [".radlens-output.json", "bundle.json", "model"]
    assert sorted(p.name for p in (folder / "model").iterdir()) == ["config.json", "model.safetensors", "text"]
    assert (folder / "model" / "text" / "tokenizer.json").is_file()  # the vocabulary the weights belong to
    assert list(tmp_path.iterdir()) == [folder]  # no temp folder left behind
    loaded = load_model(folder)
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), tiny2d.encode_image(images))
        b1, b2 = tiny2d.tokenize(captions), loaded.tokenize(captions)
        assert torch.equal(b1["input_ids"], b2["input_ids"])
        assert torch.equal(loaded.encode_text(**b2), tiny2d.encode_text(**b1))
    assert loaded.preprocessing == PREPROCESSING and loaded.extra == {"epoch": 3}
    index = json.loads((folder / "bundle.json").read_text())
    assert index["format"] == "radlens-bundle" and index["format_version"] == 2 and index["radlens_version"]
    assert index["components"] == {"model": "clip"} and index["preprocessing"] == PREPROCESSING
    config = json.loads((folder / "model" / "config.json").read_text())
    assert config == tiny2d.config and config["kind"] == "clip" and config["text"]["context_length"] == 256


def test_saving_over_a_bundle_replaces_it(tiny2d, tmp_path: Path) -> None:
    folder = save_bundle(tiny2d, tmp_path / "b", {"v": 1})
    save_bundle(tiny2d, folder, {"v": 2})
    assert load_model(folder).preprocessing == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_a_failed_save_leaves_the_old_bundle(tiny2d, tmp_path: Path) -> None:
    folder = save_bundle(tiny2d, tmp_path / "b", {"v": 1})
    with pytest.raises(TypeError):
        save_bundle(tiny2d, folder, {"v": object()})  # not JSON-able: fails after the weights are written
    assert load_model(folder).preprocessing == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_saving_a_bundle_deletes_only_radlens_files(tiny2d, tmp_path: Path) -> None:
    from radlens.common.atomic import MARKER, read_marker
    from radlens.evaluate.slice_encoder import bundle_sha256

    folder = save_bundle(tiny2d, tmp_path / "b", {"v": 1})
    digest = bundle_sha256(folder)
    (folder / "notes.txt").write_text("mine")
    save_bundle(tiny2d, folder, {"v": 2})
    assert (folder / "notes.txt").read_text() == "mine" and load_model(folder).preprocessing == {"v": 2}
    assert "notes.txt" not in read_marker(folder)
    (folder / "notes.txt").unlink()
    save_bundle(tiny2d, folder, {"v": 1})
    assert bundle_sha256(folder) == digest  # the marker's time is not part of the bundle's hash
    (folder / MARKER).unlink()  # a bundle saved before output folders had a marker: still radlens'
    save_bundle(tiny2d, folder, {"v": 3})
    assert load_model(folder).preprocessing == {"v": 3} and read_marker(folder)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        save_bundle(tiny2d, other, {"v": 1})
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_registry_name_gives_fresh_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radlens.models.clip import CLIPModel
    from radlens.models.image import ResNetEncoder

    model = load_model("tiny-vit2d", kind="clip")
    assert isinstance(model, CLIPModel) and model.config["image"]["input_shape"] == [64, 64]
    (tmp_path / "my-res.json").write_text(json.dumps({"kind": "resnet", "input_shape": [32, 32], "depth": 10}))
    monkeypatch.setenv("RADLENS_MODEL_CONFIGS", str(tmp_path))
    assert isinstance(load_model("my-res", kind=("vit", "resnet")), ResNetEncoder)
    assert isinstance(load_model(str(tmp_path / "my-res.json")), ResNetEncoder)
    with pytest.raises(InputError, match="my-res: a resnet model, but a clip model is needed here"):
        load_model("my-res", kind="clip")


def test_kind_mismatch_and_run_folders(tiny2d, tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_bundle(tiny2d, run / "last", {"checkpoint": "last"})
    assert resolve_bundle(run) == run / "last" and load_model(run).preprocessing == {"checkpoint": "last"}
    save_bundle(tiny2d, run / "best", {"checkpoint": "best"})
    assert load_model(run, kind="clip").preprocessing == {"checkpoint": "best"}
    with pytest.raises(InputError, match="a clip model, but a classfine or report_labeller model is needed here"):
        load_model(run / "best", kind=("classfine", "report_labeller"))


def test_bad_bundles_and_names(tiny2d, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_bundle(tiny2d, tmp_path / "b", {})
    (folder / "model" / "model.safetensors").unlink()
    (folder / "model" / "model.pt").write_bytes(b"not loaded")  # a pickle is never a fallback
    with pytest.raises(InputError, match=r"model\.safetensors: bundle component has no model.safetensors"):
        load_model(folder)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="neither a model bundle nor a run folder"):
        load_model(tmp_path / "other")
    with pytest.raises(ConfigError, match="not a bundle folder, a registry name"):
        load_model("no-such-model")
    with pytest.raises(InputError, match=r"bundle\.json: unknown component kind None"):
        load_model(tmp_path / "b" / "bundle.json")  # a JSON file that is not a model config
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="Hugging Face Hub"):
        load_model("someone/not-cached-bundle")


def test_hub_id_downloads_every_bundle_file(tiny2d, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub bundle is fetched with ``allow_patterns`` that keep every file of the bundle (nested tokenizer too)."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    repo = save_bundle(tiny2d, tmp_path / "repo", {"v": "hub"})
    (repo / "README.md").write_text("model card")  # not part of the bundle: not fetched

    def snapshot_download(repo_id: str, allow_patterns: list[str]) -> str:
        assert repo_id == "someone/tiny"
        files = [str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):
            (tmp_path / "cache" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / name, tmp_path / "cache" / name)
        return str(tmp_path / "cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = load_model("someone/tiny", kind="clip")
    assert loaded.preprocessing == {"v": "hub"} and not (tmp_path / "cache" / "README.md").exists()
    assert loaded.config == tiny2d.config


@pytest.fixture()
def small_bundle(tmp_path: Path) -> Path:
    from radlens.models.components import build

    return save_bundle(build({"kind": "abmil", "in_dim": 8, "hidden": 4}), tmp_path / "small")


@pytest.mark.parametrize("file,content,reason", [
    ("bundle.json", "{", "not a radlens model bundle"),
    ("bundle.json", b"\xff\xfe\x00garbage", "not a radlens model bundle"),
    ("bundle.json", '{"format": "diffusers", "components": {"model": "abmil"}}', "not a radlens bundle index"),
    ("bundle.json", '["radlens-bundle"]', "not a radlens bundle index"),
    ("bundle.json", '{"format": "radlens-bundle", "format_version": 99, "components": {"model": "abmil"}}', "newer"),
    ("bundle.json", '{"format": "radlens-bundle", "format_version": "2", "components": {"model": "abmil"}}', "int"),
    ("bundle.json", '{"format": "radlens-bundle", "format_version": 2, "components": {}}', "names no components"),
    ("bundle.json", '{"format": "radlens-bundle", "format_version": 2, "components": {"head": "abmil"}}', "readable"),
    ("model/config.json", "{", "not a readable component config"),
    ("model/config.json", "[1, 2]", "must be a JSON object"),
    ("model/config.json", '{"kind": "abmil"}', "needs in_dim"),
    ("model/config.json", '{"kind": "abmil", "in_dim": 8, "hidden": 4, "depth": 2}', "unknown key.*depth"),
    ("model/config.json", '{"kind": "transformer", "in_dim": 8}', "unknown component kind 'transformer'"),
    ("model/config.json", '{"kind": "abmil", "in_dim": "eight"}', "config.json"),  # the constructor's TypeError
    ("model/config.json", '{"kind": "abmil", "in_dim": 8, "hidden": 5}', "do not match the component's config"),
    ("model/model.safetensors", b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "do not match"),  # no tensors
    ("model/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage", "do not match|deserializ"),
    ("model/model.safetensors", b"garbage", "do not match|deserializ"),
])
def test_bad_bundle_files_are_refused_naming_the_file(small_bundle: Path, file: str, content: str | bytes,
                                                      reason: str) -> None:
    path = small_bundle / file
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError, match=reason) as err:
        load_bundle(small_bundle)
    assert err.value.path.startswith(str(small_bundle))  # names the bundle, and the file when it could be read
    with pytest.raises(InputError):
        load_model(small_bundle)
