"""ContrastiveLoss against direct reference computations, single process and gathered over 2 ranks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from radlens.errors import ConfigError
from radlens.losses.contrastive import ContrastiveLoss, finding_kernel, time_kernel

MODES = ("clip", "multi_positive", "soft", "findings")
# Multi-hot finding labels: rows 0 and 2 share both findings, 1 and 5 are normal.
FINDINGS = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.float32)


def _features(n: int = 8, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g), dim=1)
    txt = F.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, -1, 0, 2])[:n]
    te = torch.tensor([0.010, 0.011, 0.010, 0.080, 0.100, 0.0105, 0.030, 0.080])[:n]
    tr = torch.tensor([0.5, 0.5, 0.52, 2.0, 3.0, 0.5, 1.0, 2.0])[:n]
    ti = torch.tensor([math.nan, math.nan, math.nan, 0.9, math.nan, math.nan, math.nan, 0.9])[:n]
    return img, txt, labels, torch.stack([te, tr, ti], dim=1)


def _reference(img, txt, scale, targets) -> torch.Tensor:
    """Per-row cross-entropy written out with explicit loops over rows and columns."""
    total = 0.0
    for a, b in ((img, txt), (txt, img)):
        logits = scale * a @ b.T
        for i in range(len(a)):
            log_p = logits[i] - torch.logsumexp(logits[i], dim=0)
            total = total - sum(targets[i, j] * log_p[j] for j in range(len(b))) / len(a)
    return total / 2


def _reference_targets(mode: str, labels, times, alpha=0.3, sigma=0.1) -> torch.Tensor:
    n = len(labels)
    if mode == "clip":
        return torch.eye(n)
    t = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            if mode == "findings":
                a = {k for k in range(FINDINGS.shape[1]) if FINDINGS[i, k]}
                b = {k for k in range(FINDINGS.shape[1]) if FINDINGS[j, k]}
                t[i, j] = len(a & b) / len(a | b) if a | b else 1.0
            elif mode == "multi_positive":
                t[i, j] = float(i == j or (labels[i] >= 0 and labels[i] == labels[j]))
            else:
                d2, ok = 0.0, True
                for k in range(times.shape[1]):
                    a, b = times[i, k].item(), times[j, k].item()
                    if math.isnan(a) and math.isnan(b):
                        continue
                    if math.isnan(a) or math.isnan(b):
                        ok = False
                        break
                    d2 += (math.log(1 + a / 1e-3) - math.log(1 + b / 1e-3)) ** 2
                t[i, j] = math.exp(-d2 / (2 * sigma**2)) if ok else 0.0
        t[i] = t[i] / t[i].sum()
    if mode in ("soft", "findings"):
        t = (1 - alpha) * torch.eye(n) + alpha * t
    return t


def test_plain_clip_equals_cross_entropy() -> None:
    img, txt, _, _ = _features()
    scale = torch.tensor(1 / 0.07)
    target = torch.arange(len(img))
    expected = (F.cross_entropy(scale * img @ txt.T, target) + F.cross_entropy(scale * txt @ img.T, target)) / 2
    assert torch.allclose(ContrastiveLoss("clip")(img, txt, scale), expected, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_equals_reference(mode: str) -> None:
    img, txt, labels, times = _features()
    scale = torch.tensor(10.0)
    got = ContrastiveLoss(mode)(img, txt, scale, labels=labels, metadata=times, findings=FINDINGS)
    expected = _reference(img, txt, scale, _reference_targets(mode, labels, times))
    assert torch.allclose(got, expected, atol=1e-5)


def test_multi_positive_differs_from_clip_when_labels_repeat() -> None:
    img, txt, labels, _ = _features()
    scale = torch.tensor(10.0)
    assert not torch.allclose(ContrastiveLoss("multi_positive")(img, txt, scale, labels=labels),
                              ContrastiveLoss("clip")(img, txt, scale))
    unique = torch.arange(len(img))
    assert torch.allclose(ContrastiveLoss("multi_positive")(img, txt, scale, labels=unique),
                          ContrastiveLoss("clip")(img, txt, scale))


def test_time_kernel_near_protocols_close_far_ones_not() -> None:
    _, _, _, times = _features()
    k = time_kernel(times, times)
    assert torch.allclose(k.diagonal(), torch.ones(len(times)))
    assert k[0, 5] > 0.5  # TE 10 vs 10.5 ms, same TR
    assert k[0, 6] < 1e-3  # TE 10 vs 30 ms
    assert k[0, 3] == 0  # TI known for one, missing for the other


def test_finding_kernel_is_jaccard_and_normal_scans_match_each_other() -> None:
    k = finding_kernel(FINDINGS, FINDINGS)
    assert k[0, 2] == 1 and k[1, 5] == 1  # same findings; both normal
    assert k[0, 3] == pytest.approx(0.5) and k[0, 1] == 0 and k[4, 6] == pytest.approx(0.5)
    assert torch.allclose(k, k.T)
    unknown = torch.tensor([[1.0, float("nan"), 0.0]])  # an unknown label counts as absent
    assert finding_kernel(unknown, FINDINGS[:1]).item() == pytest.approx(0.5)


def test_missing_labels_or_metadata_is_a_config_error() -> None:
    img, txt, _, _ = _features()
    with pytest.raises(ConfigError, match="labels"):
        ContrastiveLoss("multi_positive")(img, txt, torch.tensor(1.0))
    with pytest.raises(ConfigError, match="metadata"):
        ContrastiveLoss("soft")(img, txt, torch.tensor(1.0))
    with pytest.raises(ConfigError, match="finding labels"):
        ContrastiveLoss("findings")(img, txt, torch.tensor(1.0), findings=torch.zeros(len(img), 0))
    with pytest.raises(ConfigError, match="mode"):
        ContrastiveLoss("infonce")  # type: ignore[arg-type]


def _rank_worker(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        img, txt, labels, times = _features()
        n = len(img) // world
        rows = slice(rank * n, (rank + 1) * n)
        results = {}
        for mode in MODES:
            i, t = img[rows].clone().requires_grad_(), txt[rows].clone().requires_grad_()
            scale = torch.tensor(10.0, requires_grad=True)
            loss = ContrastiveLoss(mode)(i, t, scale, labels=labels[rows], metadata=times[rows], findings=FINDINGS[rows])
            loss.backward()
            # DDP averages gradients over ranks: do the same for the loss value and the shared scale.
            value, scale_grad = loss.detach().clone(), scale.grad.clone()
            dist.all_reduce(value)
            dist.all_reduce(scale_grad)
            results[mode] = (value / world, i.grad / world, t.grad / world, scale_grad / world)
        torch.save(results, f"{out}/rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while the other still talks to it (an abort at exit otherwise)
    finally:
        dist.destroy_process_group()


def test_gathered_local_loss_equals_global_loss_over_two_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_rank_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    img, txt, labels, times = _features()
    for mode in MODES:
        i, t = img.clone().requires_grad_(), txt.clone().requires_grad_()
        scale = torch.tensor(10.0, requires_grad=True)
        loss = ContrastiveLoss(mode)(i, t, scale, labels=labels, metadata=times, findings=FINDINGS)
        loss.backward()
        for r in range(world):
            value, gi, gt, gs = ranks[r][mode]
            assert torch.allclose(value, loss.detach(), atol=1e-5), mode
            assert torch.allclose(gs, scale.grad, atol=1e-5), mode
            n = len(img) // world
            assert torch.allclose(gi, i.grad[r * n : (r + 1) * n], atol=1e-5), mode
            assert torch.allclose(gt, t.grad[r * n : (r + 1) * n], atol=1e-5), mode
