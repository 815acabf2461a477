"""MoCo v3 InfoNCE and LeCL's lesion-negative term against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from radlens.errors import ConfigError
from radlens.losses.moco import MocoLoss, lecl_infonce


def _direct(q: torch.Tensor, k: torch.Tensor, t: float, lesion: list[int], w: float, offset: int) -> torch.Tensor:
    """The docstring formula, query by query with explicit sums."""
    total = torch.zeros(())
    for i in range(len(q)):
        qi = q[i] / q[i].norm()
        s = [float(qi @ (k[j] / k[j].norm())) / t for j in range(len(k))]
        p = offset + i
        denominator = sum(math.exp(s[j]) for j in range(len(k)))
        denominator += w * sum(math.exp(s[j]) for j in range(len(k)) if lesion[j] == 1 and j != p)
        total = total + (-s[p] + math.log(denominator))
    return total / len(q) * 2 * t


def test_lesion_term_matches_the_formula() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(3, 5), torch.randn(7, 5)  # this rank's 3 queries, a global batch of 7 keys
    lesion = [1, 0, 1, -1, 1, 1, 0]  # -1 (unknown) is not a lesion; query 1's own key (column 4) is one
    for w in (0.0, 0.5, 2.0):
        got = lecl_infonce(q, k, 0.2, torch.tensor(lesion), w, offset=3)
        assert float(got) == pytest.approx(float(_direct(q, k, 0.2, lesion, w, 3)), rel=1e-5)


def test_weight_zero_is_plain_moco_v3() -> None:
    torch.manual_seed(1)
    q, k = torch.randn(4, 6), torch.randn(4, 6)
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2
    plain = F.cross_entropy(logits, torch.arange(4)) * 2 * 0.2  # MoCo v3's contrastive_loss
    lesion = torch.tensor([1, 1, 0, 1])
    assert torch.allclose(lecl_infonce(q, k, 0.2, lesion, 0.0), plain)
    assert torch.allclose(lecl_infonce(q, k, 0.2, None, 1.0), plain)
    assert torch.allclose(lecl_infonce(q, k, 0.2, torch.zeros(4, dtype=torch.long), 1.0), plain)  # no lesion key
    assert lecl_infonce(q, k, 0.2, lesion, 1.0) > plain  # lesion keys only add to the denominator


def test_symmetrised_loss_and_gradients() -> None:
    torch.manual_seed(2)
    q1, q2 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    k1, k2 = torch.randn(4, 6), torch.randn(4, 6)
    lesion = torch.tensor([1, 0, 1, 0])
    loss = MocoLoss(temperature=0.5, lesion_weight=1.5)(q1, q2, k1, k2, lesion)
    expected = lecl_infonce(q1, k2, 0.5, lesion, 1.5) + lecl_infonce(q2, k1, 0.5, lesion, 1.5)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert q1.grad is not None and q2.grad is not None and q1.grad.abs().sum() > 0 and torch.isfinite(q1.grad).all()
    # the lesion term changes the gradient (it is not a per-row constant that softmax would cancel)
    q = q1.detach().clone().requires_grad_(True)
    lecl_infonce(q, k2, 0.5, lesion, 0.0).backward()
    assert not torch.allclose(q.grad, q1.grad)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        MocoLoss(temperature=0)
    with pytest.raises(ConfigError, match="lesion_weight"):
        MocoLoss(lesion_weight=-1)
