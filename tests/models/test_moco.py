"""The MoCo v3 component: heads as in MoCo v3, a momentum copy without gradients that moves by (1 - m)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radlens.errors import ConfigError
from radlens.models.components import build
from radlens.models.moco import MoCo

ENCODER = {"kind": "gated_cnn", "input_shape": [16, 16], "depths": [1], "dims": [8]}
SPEC = {"kind": "moco", "encoder": ENCODER, "dim": 6, "hidden": 12}


def _model() -> MoCo:
    torch.manual_seed(0)
    return build(SPEC)


def test_heads_follow_moco_v3() -> None:
    model = _model()
    linear = [m for m in model.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias) for m in linear] == [(8, 12, None), (12, 12, None), (12, 6, None)]
    norms = [m for m in model.projector if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 3 and norms[-1].affine is False and norms[0].affine  # SimCLR's affine-free last BN
    assert [type(m) for m in model.predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]  # no last BN
    assert model.width == 8 and model.input_shape == (1, 16, 16)
    assert build({**SPEC, "proj_layers": 2}).projector[3].out_features == 6
    with pytest.raises(ConfigError, match="moco dim"):
        build({**SPEC, "dim": 0})


def test_momentum_copies_have_no_gradient_and_live_in_the_state_dict() -> None:
    model = _model()
    names = model.state_dict().keys()
    assert any(k.startswith("momentum_encoder.") for k in names) and any(k.startswith("momentum_projector.") for k in names)
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    for a, b in zip(model.momentum_encoder.parameters(), model.encoder.parameters()):
        assert torch.equal(a, b)  # a copy at the start
    x1, x2 = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    out = model(x1, x2)
    assert out["q1"].shape == out["k2"].shape == (4, 6) and out["h1"].shape == (4, 8)
    assert out["q1"].requires_grad and not out["k1"].requires_grad
    model.eval()
    assert torch.equal(model.encode(x1), model.encoder(x1))  # the slice embedding is the base encoder's


def test_update_momentum_moves_toward_the_base_by_one_minus_m() -> None:
    model = _model()
    with torch.no_grad():
        for p in (*model.encoder.parameters(), *model.projector.parameters()):
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in (*model.momentum_encoder.parameters(), *model.momentum_projector.parameters())]
    base = [p.clone() for p in (*model.encoder.parameters(), *model.projector.parameters())]
    model.update_momentum(0.9)
    after = [*model.momentum_encoder.parameters(), *model.momentum_projector.parameters()]
    assert len(after) == len(base) > 0
    for old, new, b in zip(before, after, base):
        torch.testing.assert_close(new, old + 0.1 * (b - old))
    model.update_momentum(1.0)  # m = 1 freezes the keys
    assert all(torch.equal(a, b) for a, b in zip(after, [*model.momentum_encoder.parameters(),
                                                        *model.momentum_projector.parameters()]))
    model.update_momentum(0.0)  # m = 0 copies the base
    assert all(torch.equal(a, b) for a, b in zip(model.momentum_encoder.parameters(), model.encoder.parameters()))
