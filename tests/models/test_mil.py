"""MIL heads: padding never changes a bag's result, attention is a distribution over real instances."""

from __future__ import annotations

import pytest
import torch

from radlens.errors import ConfigError
from radlens.models.components import build
from radlens.models.mil import MILHead

D = 8
HEADS = {
    "mean": {"kind": "mean_mil", "in_dim": D, "n_classes": 3},
    "mean_hidden": {"kind": "mean_mil", "in_dim": D, "n_classes": 3, "hidden": 6},
    "abmil": {"kind": "abmil", "in_dim": D, "hidden": 6, "n_classes": 3, "gated": False},
    "gated_abmil": {"kind": "abmil", "in_dim": D, "hidden": 6, "n_classes": 3, "gated": True},
    "pma": {"kind": "pma_mil", "in_dim": D, "hidden": 8, "n_classes": 3, "num_heads": 2, "num_layers": 2},
    "pma_no_encoder": {"kind": "pma_mil", "in_dim": D, "hidden": 8, "n_classes": 3, "num_heads": 2, "num_layers": 0},
}
SIZES = (3, 9, 1, 6)


def _randomised(spec: dict) -> MILHead:
    """A head in eval mode whose zero-initialised output layer is made random (so logits depend on the bag)."""
    torch.manual_seed(0)
    head = build(spec).eval()
    torch.nn.init.normal_(head.classifier[-1].weight)
    return head


def _padded(bags: list[torch.Tensor], fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.full((len(bags), max(SIZES), D), fill)
    mask = torch.zeros(len(bags), max(SIZES), dtype=torch.bool)
    for b, bag in enumerate(bags):
        feats[b, : len(bag)], mask[b, : len(bag)] = bag, True
    return feats, mask


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_padded_bag_gives_the_same_logits_and_attention_as_alone(name: str) -> None:
    head = _randomised(HEADS[name])
    assert isinstance(head, MILHead)
    bags = [torch.randn(n, D) for n in SIZES]
    with torch.no_grad():
        for fill in (0.0, 7.5):  # zero padding as collate_bags writes it, and padding that is not zero
            feats, mask = _padded(bags, fill)
            logits, weights = head.logits_and_attention(feats, mask)
            assert logits.shape == (len(SIZES), 3) and weights.shape == (len(SIZES), max(SIZES))
            assert torch.equal(head(feats, mask), logits) and torch.equal(head.attention(feats, mask), weights)
            assert (weights[~mask] == 0).all() and (weights >= 0).all()
            torch.testing.assert_close(weights.sum(1), torch.ones(len(SIZES)), rtol=0, atol=1e-6)
            for b, bag in enumerate(bags):
                alone_logits, alone_weights = head.logits_and_attention(bag[None], torch.ones(1, len(bag), dtype=torch.bool))
                torch.testing.assert_close(logits[b], alone_logits[0], rtol=0, atol=1e-6)
                torch.testing.assert_close(weights[b, : len(bag)], alone_weights[0], rtol=0, atol=1e-6)


def test_mean_pooling_attention_is_uniform_over_real_instances() -> None:
    head = _randomised(HEADS["mean"])
    feats, mask = _padded([torch.randn(n, D) for n in SIZES])
    weights = head.attention(feats, mask)
    for b, n in enumerate(SIZES):
        assert torch.allclose(weights[b, :n], torch.full((n,), 1.0 / n)) and (weights[b, n:] == 0).all()
    expected = head.classifier(torch.stack([feats[b, :n].mean(0) for b, n in enumerate(SIZES)]))
    torch.testing.assert_close(head(feats, mask), expected)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_train_without_nan_on_padded_batches(name: str) -> None:
    head = _randomised({**HEADS[name], "dropout": 0.1}).train()
    feats, mask = _padded([torch.randn(n, D) for n in SIZES])
    loss = head(feats, mask).sum()
    loss.backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_the_output_layer_starts_at_zero_so_attention_waits_for_the_classifier(name: str) -> None:
    torch.manual_seed(0)
    head = build(HEADS[name]).train()
    assert (head.classifier[-1].weight == 0).all() and (head.classifier[-1].bias != 0).any()
    feats, mask = _padded([torch.randn(n, D) for n in SIZES])
    head(feats, mask).pow(2).sum().backward()
    assert head.classifier[-1].weight.grad.abs().sum() > 0  # the classifier learns first
    pooling = [p for n, p in head.named_parameters() if not n.startswith("classifier")]
    assert all(p.grad is None or (p.grad == 0).all() for p in pooling)  # no pull on the attention yet


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "pma_mil", "in_dim": D, "hidden": 10, "num_heads": 4}, "multiple of num_heads"),
    ({"kind": "pma_mil", "in_dim": D, "num_layers": -1}, "num_layers >= 0"),
    ({"kind": "mean_mil", "in_dim": D, "hidden": -1}, "hidden >= 0"),
    ({"kind": "mean_mil", "in_dim": 0}, "in_dim and n_classes must be >= 1"),
    ({"kind": "pma_mil", "in_dim": D, "dropout": 1.0}, r"dropout in \[0, 1\)"),
])
def test_bad_head_configs_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(spec)
