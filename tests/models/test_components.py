"""Components: configs are constructor arguments, and every registered kind survives a bundle round trip.

The bundle contract (issue #9): for EVERY kind in ``kinds()``, a tiny instance saved as a bundle
loads back (without the hub, the packaged original, or any unpickling) with the same config, the
same state dict and the same outputs. A kind without an entry in ``CONTRACT`` fails here, so a new
kind cannot be registered without joining the contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models import components
from radlens.models.bundle import load_bundle, load_model, read_index, save_bundle
from radlens.models.components import build, check_config, kinds

TEXT = {"kind": "scratch", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
        "vocab_size": 300, "context_length": 64}
VIT = {"kind": "vit", "input_shape": [16, 16], "patch_size": [8, 8], "hidden_size": 16, "mlp_dim": 32,
       "num_layers": 1, "num_heads": 2}
RESNET = {"kind": "resnet", "input_shape": [16, 16, 8], "depth": 10, "width_factor": 0.25, "stem_stride": 2}
CLIP = {"kind": "clip", "image": VIT, "text": TEXT, "embed_dim": 8}
UNET = {"in_channels": 4, "out_channels": 4, "channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1,
        "norm_num_groups": 8, "num_head_channels": 8, "cross_attention_dim": 16}


def _minilm_path() -> str:
    from radlens.models.text_tower import minilm_path

    return minilm_path()


def _images(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    return {"features": model(torch.randn(2, original.in_channels, *original.input_shape))}


def _texts(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    batch = original.tokenize(captions)
    assert all(torch.equal(batch[k], v) for k, v in model.tokenize(captions).items())  # same tokenizer
    return {"pooled": model(**batch), "tokens": model.encode_tokens(**batch)[0]}


def _clip(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    batch = original.tokenize(captions)
    return {"image": model.encode_image(torch.randn(2, *original.input_shape)), "text": model.encode_text(**batch),
            "scale": model.logit_scale}


def _classfine(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    return {"logits": model(torch.randn(2, *original.clip.input_shape))}


def _labeller(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    return {"logits": model(**original.tokenize(captions))}


def _moco(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    images = torch.randn(4, *original.input_shape)
    out = model(images, images.flip(-1))  # eval mode: the batch norms use their running statistics
    return {"features": model.encode(images), **{k: out[k] for k in ("q1", "k2")}}


def _segmenter(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    images = torch.randn(2, 1, *((12, 10) if original.spatial_dims == 2 else (12, 10, 8)))
    return {"logits": model(images), "labels": model.segment(images)}


def _autoencoder(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    images = torch.rand(2, 1, 16, 16)
    return {"reconstruction": model(images)[0], "latents": model.encode_latents(images, sample=False)}


def _diffusion(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([1, 700]), torch.randn(2, 3, 16)
    if original.config["kind"] == "diffusion_unet":
        return {"prediction": model(x, t, context=context)}
    down, mid = model(x=x, timesteps=t, controlnet_cond=model.encode_mask(torch.randint(0, 3, (2, 1, 16, 16))), context=context)
    return {"mid": mid, "first": down[0]}


def _mil(model: Any, original: Any, captions: list[str]) -> dict[str, Any]:
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    return {"logits": model(torch.randn(2, 5, 8), mask)}


@dataclass(frozen=True)
class Case:
    """A tiny instance of a kind (its config, built with ``texts`` for a scratch vocabulary) and its outputs."""

    spec: Callable[[], dict[str, Any]]
    outputs: Callable[[Any, Any, list[str]], dict[str, Any]]


CONTRACT: dict[str, Case] = {
    "vit": Case(lambda: VIT, _images),
    "resnet": Case(lambda: RESNET, _images),
    "scratch": Case(lambda: {**TEXT, "pooling": "sentences"}, _texts),
    # the packaged MiniLM, frozen (its outputs go through the cache) and checkpointed like tiny-res3d's
    "minilm": Case(lambda: {"kind": "minilm", "context_length": 128, "trainable_layers": 0}, _texts),
    "pretrained": Case(lambda: {"kind": "pretrained", "path_or_id": _minilm_path(), "pooling": "cls",
                                "trainable_layers": 1}, _texts),
    "clip": Case(lambda: CLIP, _clip),
    "classfine": Case(lambda: {"kind": "classfine", "clip": {**CLIP, "image": RESNET}, "findings": ["effusion", "nodule"],
                               "features": "pooled", "hidden": 4}, _classfine),
    "report_labeller": Case(lambda: {"kind": "report_labeller", "text": TEXT, "findings": ["a", "b", "c"]}, _labeller),
    "abmil": Case(lambda: {"kind": "abmil", "in_dim": 8, "hidden": 4, "n_classes": 2}, _mil),
    "swin": Case(lambda: {"kind": "swin", "input_shape": [32, 32], "embed_dim": 6, "depths": [1, 1, 1, 1],
                          "num_heads": [1, 1, 2, 2], "window_size": 4}, _images),
    "gated_cnn": Case(lambda: {"kind": "gated_cnn", "input_shape": [16, 16], "in_channels": 2, "depths": [1, 1],
                               "dims": [8, 16]}, _images),
    # the momentum copies are part of the state dict; the ViT has the conv stem (and its batch norms)
    "moco": Case(lambda: {"kind": "moco", "encoder": {**VIT, "conv_stem": True}, "dim": 8, "hidden": 16}, _moco),
    "mean_mil": Case(lambda: {"kind": "mean_mil", "in_dim": 8, "n_classes": 2, "hidden": 4}, _mil),
    "pma_mil": Case(lambda: {"kind": "pma_mil", "in_dim": 8, "hidden": 8, "n_classes": 2, "num_heads": 2}, _mil),
    # the generative parts: the latent scale factor is a buffer; the ControlNet embeds 16x16 masks to 8x8 latents
    "autoencoder_kl": Case(lambda: {"kind": "autoencoder_kl", "channels": [4, 8], "attention_levels": [False, False],
                                    "num_res_blocks": 1, "latent_channels": 2, "norm_num_groups": 4,
                                    "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}, _autoencoder),
    "diffusion_unet": Case(lambda: {"kind": "diffusion_unet", **UNET}, _diffusion),
    "mask_controlnet": Case(lambda: {"kind": "mask_controlnet", **{k: v for k, v in UNET.items() if k not in ("out_channels",)},
                                     "num_labels": 3, "conditioning_channels": [4, 8]}, _diffusion),
    # label ids as in the prepared dataset (not consecutive), through the argmax
    "unet-seg": Case(lambda: {"kind": "unet-seg", "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 1,
                              "label_ids": [0, 2, 5]}, _segmenter),
    "dynunet-seg": Case(lambda: {"kind": "dynunet-seg", "out_channels": 2, "spatial_dims": 3, "filters": [4, 8, 8],
                                 "strides": [1, 2, 2]}, _segmenter),
}


def test_every_registered_kind_is_in_the_bundle_contract() -> None:
    assert set(CONTRACT) == set(kinds()), "add a tiny instance of each new component kind to CONTRACT"


def _no_pickles_nor_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a bundle must read neither a pickle nor the text tower's original (hub, packaged MiniLM)."""
    import radlens.models.text_tower as text

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bundle load reached outside the bundle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(text, "load_pretrained", refuse)
    monkeypatch.setattr(text, "minilm_path", refuse)


@pytest.mark.parametrize("kind", sorted(set(CONTRACT) | set(kinds())))
def test_save_load_gives_the_same_component(kind: str, captions: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert kind in CONTRACT, f"component kind {kind!r} has no tiny instance in CONTRACT"
    assert kind in kinds(), f"CONTRACT names {kind!r}, which is not a registered kind"
    case = CONTRACT[kind]
    torch.manual_seed(0)
    model = build(case.spec(), texts=captions).eval()
    assert model.config["kind"] == kind and list(model.config)[0] == "kind"
    assert json.loads(json.dumps(model.config)) == model.config  # JSON-able as it is
    folder = save_bundle(model, tmp_path / "bundle", {"shape": [16, 16]}, {"epoch": 1})

    assert read_index(folder)["components"] == {"model": kind}
    assert json.loads((folder / "model" / "config.json").read_text()) == model.config
    assert not [p for p in folder.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt")]
    with monkeypatch.context() as patched:
        _no_pickles_nor_originals(patched)
        loaded = load_bundle(folder)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config and loaded.preprocessing == {"shape": [16, 16]} and loaded.extra == {"epoch": 1}
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == \
           [n for n, p in loaded.named_parameters() if p.requires_grad]  # frozen parts stay frozen
    torch.manual_seed(1)
    expected = case.outputs(model, model, captions)
    torch.manual_seed(1)
    got = case.outputs(loaded, model, captions)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{kind}: {name} differs after the round trip"


def test_several_components_in_one_bundle(captions: list[str], tmp_path: Path) -> None:
    torch.manual_seed(0)
    clip = build(CLIP, texts=captions).eval()
    head = build({"kind": "abmil", "in_dim": 8, "hidden": 4}).eval()
    folder = save_bundle({"encoder": clip, "head": head}, tmp_path / "b", {"v": 1}, {"note": "two"})
    index = read_index(folder)
    assert index["components"] == {"encoder": "clip", "head": "abmil"} and index["format_version"] == 2
    assert sorted(p.name for p in folder.iterdir()) == [".radlens-output.json", "bundle.json", "encoder", "head"]
    assert (folder / "encoder" / "text" / "tokenizer.json").is_file()
    loaded = load_model(folder)
    assert isinstance(loaded, nn.ModuleDict) and list(loaded) == ["encoder", "head"] and not loaded.training
    assert loaded.preprocessing == {"v": 1} and loaded.extra == {"note": "two"}
    images, batch = torch.randn(3, 1, 16, 16), clip.tokenize(captions)
    with torch.no_grad():
        bags = [m.encode_image(images).unsqueeze(0) for m in (clip, loaded["encoder"])]
        assert torch.equal(bags[0], bags[1])
        assert torch.equal(head(bags[0], torch.ones(1, 3)), loaded["head"](bags[1], torch.ones(1, 3)))
        assert torch.equal(loaded["encoder"].encode_text(**batch), clip.encode_text(**batch))
    with pytest.raises(InputError, match="a multi-component model, but a clip model is needed"):
        load_model(folder, kind="clip")


def test_config_is_the_constructor_arguments(captions: list[str]) -> None:
    from radlens.models.clip import CLIPModel
    from radlens.models.image import ViTEncoder
    from radlens.models.text_tower import TextTower

    image = ViTEncoder((16, 16), (8, 8), hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
    text = TextTower("scratch", hidden_size=16, num_layers=1, num_heads=2, texts=captions)
    clip = CLIPModel(image, text, embed_dim=8)
    assert image.config["input_shape"] == [16, 16] and image.config["pooling"] == "cls"  # tuples as lists, defaults too
    assert "texts" not in text.config and "parts" not in text.config  # keyword-only: runtime inputs
    assert list(clip.config) == ["kind", "image", "text", "embed_dim", "init_temperature", "max_logit_scale",
                                 "gradient_checkpointing"]
    assert clip.config["image"] == image.config and clip.config["text"] == text.config
    rebuilt = build(clip.config, texts=captions)
    assert rebuilt.config == clip.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in clip.state_dict().items()}


def test_check_config_names_the_bad_key_before_building() -> None:
    check_config(CLIP)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) image\.patch for kind 'vit'; allowed: .*patch_size"):
        check_config({**CLIP, "image": {**VIT, "patch": 8}})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) dim for kind 'clip'; allowed: embed_dim, gradient_"):
        check_config({**CLIP, "dim": 8})
    with pytest.raises(ConfigError, match=r"kind 'clip' needs clip\.image"):
        check_config({"kind": "classfine", "clip": {"kind": "clip", "text": TEXT}, "findings": []})
    with pytest.raises(ConfigError, match=r"unknown component kind 'vmamba'; known: .*resnet.*vit"):
        check_config({"kind": "vmamba"})
    with pytest.raises(ConfigError, match="unknown component kind None"):
        check_config({"input_shape": [16, 16]})
    with pytest.raises(ConfigError, match="not divisible by patch_size"):  # values: the constructor's checks
        build({**VIT, "input_shape": [12, 16]})


def test_a_new_component_registers_by_decorating_its_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(components, "_KINDS", dict(components._KINDS))  # the registry stays as it was

    @components.component("test_widget", "test_gadget", family="test")
    class Widget(nn.Module):
        def __init__(self, kind: str, width: int, scale: tuple[float, ...] = (1.0, 2.0), *,
                     seen: list[str] | None = None) -> None:
            super().__init__()
            self.layer, self.seen = nn.Linear(width, width), seen

    assert kinds()["test_gadget"].family == "test" and kinds()["test_widget"].cls is Widget
    widget = build({"kind": "test_gadget", "width": 3}, seen=["x"], unused="ignored")
    assert widget.config == {"kind": "test_gadget", "width": 3, "scale": [1.0, 2.0]} and widget.seen == ["x"]
    with pytest.raises(ConfigError, match="needs width"):
        build({"kind": "test_widget"})
    with pytest.raises(ConfigError, match="registered twice"):
        components.component("test_widget", family="test")(type("Other", (nn.Module,), {}))
    with pytest.raises(ConfigError, match="not a registered component kind"):
        save_bundle(nn.Linear(2, 2), Path("/nonexistent/never-written"))
