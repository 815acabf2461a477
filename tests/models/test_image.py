"""Image encoders: single-channel 2D/3D ViT and ResNet, pooling, checkpointing, shape errors."""

from __future__ import annotations

import pytest
import torch

from radlens.errors import ConfigError, InputError
from radlens.models.components import build
from radlens.models.image import ResNetEncoder, ViTEncoder


def _vit(**kw):
    args = dict(input_shape=[32, 32, 16], patch_size=[8, 8, 4], hidden_size=32, mlp_dim=64, num_layers=2, num_heads=4)
    return ViTEncoder(**{**args, **kw})


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_vit3d_single_channel_gives_one_vector_per_volume(pooling: str) -> None:
    enc = _vit(pooling=pooling).eval()
    out = enc(torch.randn(3, 1, 32, 32, 16))
    assert out.shape == (3, 32)
    assert (enc.cls_token is not None) == (pooling == "cls")


def test_vit_uses_sdpa_and_matches_plain_attention() -> None:
    torch.manual_seed(0)
    fast = ViTEncoder([16, 16], [4, 4], hidden_size=32, mlp_dim=64, num_layers=2, num_heads=4).eval()
    plain = ViTEncoder([16, 16], [4, 4], hidden_size=32, mlp_dim=64, num_layers=2, num_heads=4, sdpa=False).eval()
    plain.load_state_dict(fast.state_dict())
    assert all(b.attn.use_flash_attention for b in fast.blocks)
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(fast(x), plain(x), atol=1e-5)


def test_gradient_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    enc = _vit().train()
    x = torch.randn(2, 1, 32, 32, 16)
    enc(x).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())  # no unused parameters (DDP needs that)
    ref = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.gradient_checkpointing = True
    enc(x).sum().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-5) for a, p in zip(ref, enc.parameters()))


@pytest.mark.parametrize("shape", [[32, 32], [16, 16, 8]])
def test_resnet_2d_and_3d_take_one_channel(shape: list[int]) -> None:
    enc = ResNetEncoder(shape, depth=10).eval()
    assert enc.net.conv1.in_channels == 1
    assert enc(torch.randn(2, 1, *shape)).shape == (2, enc.width)
    enc.gradient_checkpointing = True
    enc.train()
    enc(torch.randn(2, 1, *shape)).sum().backward()
    assert enc.net.conv1.weight.grad is not None


def test_resnet_width_factor_and_strided_stem_make_it_small() -> None:
    base, small = ResNetEncoder([32, 32, 16], depth=10), ResNetEncoder([32, 32, 16], depth=10, width_factor=0.25, stem_stride=2)
    assert (base.width, small.width) == (512, 128) and small.net.conv1.stride == (2, 2, 2)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in base.parameters()) / 10
    assert small(torch.randn(2, 1, 32, 32, 16)).shape == (2, 128)
    with pytest.raises(ConfigError, match="width_factor"):
        ResNetEncoder([32, 32, 16], depth=10, width_factor=0)


def test_wrong_image_shape_is_a_clear_error() -> None:
    enc = _vit().eval()
    with pytest.raises(InputError, match=r"expected \(B, 1, 32, 32, 16\).*3D"):
        enc(torch.randn(2, 1, 32, 32))  # a 2D batch for a 3D model
    with pytest.raises(InputError, match="does not fit"):
        enc(torch.randn(2, 3, 32, 32, 16))  # fake RGB


def test_config_errors_before_building() -> None:
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        build({"kind": "vit", "input_shape": [30, 32], "patch_size": [8, 8]})
    with pytest.raises(ConfigError, match="patch_size must have 3"):
        build({"kind": "vit", "input_shape": [32, 32, 16], "patch_size": [8, 8]})
    with pytest.raises(ConfigError, match="needs patch_size"):
        build({"kind": "vit", "input_shape": [32, 32]})
    with pytest.raises(ConfigError, match="unknown component kind 'vmamba'"):
        build({"kind": "vmamba", "input_shape": [32, 32]})
    with pytest.raises(ConfigError, match="resnet7"):
        build({"kind": "resnet", "input_shape": [32, 32], "depth": 7})
    with pytest.raises(ConfigError, match="2 or 3 positive ints"):
        ResNetEncoder([32], depth=10)  # the constructor checks, however it is called
    with pytest.raises(ConfigError, match="hidden_size must be divisible"):
        ViTEncoder([32, 32], [8, 8], hidden_size=30, num_heads=4)


@pytest.mark.parametrize("spec", [
    {"kind": "vit", "input_shape": [16, 16, 8], "patch_size": [8, 8, 4], "hidden_size": 16, "mlp_dim": 32,
     "num_layers": 1, "num_heads": 2, "pooling": "mean"},
    {"kind": "resnet", "input_shape": [16, 16], "depth": 10, "width_factor": 0.5},
])
def test_encoders_record_their_config_and_rebuild_from_it(spec: dict) -> None:
    enc = build(spec)
    assert enc.config["kind"] == spec["kind"] and {k: enc.config[k] for k in spec} == spec
    assert isinstance(enc, ViTEncoder if spec["kind"] == "vit" else ResNetEncoder)
    again = build(enc.config)
    assert again.config == enc.config
    assert [v.shape for v in again.state_dict().values()] == [v.shape for v in enc.state_dict().values()]
