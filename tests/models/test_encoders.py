"""Image encoders for MoCo/LeCL: MONAI Swin, the gated CNN (MambaOut style), the ViT's convolutional stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radlens.errors import ConfigError, InputError
from radlens.models.components import build
from radlens.models.encoders import GatedCNNEncoder, SwinEncoder
from radlens.models.image import ViTEncoder

SWIN = {"kind": "swin", "input_shape": [32, 32], "embed_dim": 6, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
        "window_size": 4}


def _backprop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return out


def test_swin_pools_the_last_stage_in_2d_and_3d() -> None:
    torch.manual_seed(0)
    swin = build(SWIN)
    assert isinstance(swin, SwinEncoder) and swin.width == 96 and swin.in_channels == 1
    out = _backprop(swin, torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 96) and torch.isfinite(out).all()
    swin3d = SwinEncoder([32, 32, 32], in_channels=2, embed_dim=3, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2)
    assert swin3d(torch.randn(1, 2, 32, 32, 32)).shape == (1, 48)
    with pytest.raises(InputError, match=r"expected \(B, 1, 32, 32\)"):
        swin(torch.randn(1, 1, 64, 64))
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        build({**SWIN, "input_shape": [48, 40]})
    with pytest.raises(ConfigError, match="4 entries"):
        build({**SWIN, "depths": [1, 1]})
    with pytest.raises(ConfigError, match="must divide the stage widths"):
        build({**SWIN, "num_heads": [4, 1, 1, 1]})


def test_swin_checkpointing_gives_the_same_features_and_gradients() -> None:
    torch.manual_seed(0)
    swin, x = build(SWIN).train(), torch.randn(2, 1, 32, 32)
    plain = _backprop(swin, x)
    grads = [p.grad.clone() for p in swin.parameters()]
    swin.zero_grad()
    swin.gradient_checkpointing = True
    assert torch.allclose(_backprop(swin, x), plain)
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(swin.parameters(), grads))


def test_gated_cnn_blocks_and_shapes() -> None:
    torch.manual_seed(0)
    enc = GatedCNNEncoder([16, 20], in_channels=3, depths=(1, 2), dims=(8, 12), kernel_size=3, drop_path_rate=0.1)
    assert enc.width == 12 and len(enc.stages) == 2 and len(enc.stages[1].blocks) == 2
    block = enc.stages[1].blocks[0]
    # gate, identity and depthwise-convolved parts: fc1 -> 2 * hidden, a depthwise conv over conv_ratio * dim channels
    assert block.fc1.out_features == 2 * int(8 / 3 * 12) and block.conv.groups == block.conv.in_channels == 12
    out = _backprop(enc, torch.randn(2, 3, 16, 20))
    assert out.shape == (2, 12)
    enc.eval()  # no stochastic depth in eval: the output is a function of the input
    x = torch.randn(2, 3, 16, 20)
    assert torch.equal(enc(x), enc(x))
    assert GatedCNNEncoder([16, 16, 8], depths=(1,), dims=(8,))(torch.randn(2, 1, 16, 16, 8)).shape == (2, 8)
    with pytest.raises(ConfigError, match="same number"):
        GatedCNNEncoder([16, 16], depths=(1, 1), dims=(8,))
    with pytest.raises(ConfigError, match="odd"):
        GatedCNNEncoder([16, 16], depths=(1,), dims=(8,), kernel_size=4)


def test_vit_conv_stem_replaces_the_patch_projection() -> None:
    torch.manual_seed(0)
    plain = ViTEncoder([32, 32], [8, 8], hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2)
    assert isinstance(plain.patch_embedding.patch_embeddings, nn.Conv2d)  # unchanged without the option
    assert plain.config["conv_stem"] is False
    vit = ViTEncoder([32, 32], [8, 8], hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2, conv_stem=True)
    stem = vit.patch_embedding.patch_embeddings
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    # log2(8) = 3 stride-2 3x3 convs (widths 4, 8, 16) with batch norm, then a 1x1 conv to the hidden size
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((3, 3), (2, 2), 4), ((3, 3), (2, 2), 8),
                                                                          ((3, 3), (2, 2), 16), ((1, 1), (1, 1), 16)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stem) == 3
    x = torch.randn(2, 1, 32, 32)
    assert stem(x).shape == plain.patch_embedding.patch_embeddings(x).shape == (2, 16, 4, 4)  # the same token grid
    assert _backprop(vit, x).shape == (2, 16)
    vit3d = ViTEncoder([16, 16, 8], [4, 4, 4], hidden_size=8, mlp_dim=16, num_layers=1, num_heads=2, conv_stem=True)
    assert vit3d(torch.randn(2, 1, 16, 16, 8)).shape == (2, 8)
    with pytest.raises(ConfigError, match="power-of-two patch"):
        ViTEncoder([24, 24], [6, 6], hidden_size=16, mlp_dim=32, num_layers=1, num_heads=2, conv_stem=True)
    with pytest.raises(ConfigError, match="divisible by 4"):
        ViTEncoder([32, 32], [8, 8], hidden_size=18, mlp_dim=32, num_layers=1, num_heads=2, conv_stem=True)
