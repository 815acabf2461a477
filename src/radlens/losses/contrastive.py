"""Symmetric InfoNCE for CLIP training: plain, multi-positive (protocol labels), soft targets
from acquisition times, and soft targets from finding labels.

Every mode is a cross-entropy between the softmax over similarity logits and a target
distribution per row: the identity (plain CLIP), uniform over the in-batch items with the same
label (multi-positive, SupCon-style), or the identity mixed with a kernel on acquisition-time
distance (soft) or on the overlap of the items' finding sets (findings). Under
``torch.distributed`` each rank computes only its N local rows against the N*W gathered columns
(memory N x N*W instead of (N*W)^2); the features are gathered with autograd, so the gradients,
averaged over ranks as DDP does, equal those of the global loss.

Why the soft targets work where MR-CLIP's ``--distance`` term did not: MR-CLIP added a distance
term to the logits that is the same for every column of a row, and softmax is invariant to adding
a per-row constant, so the term left the loss gradient unchanged. Here the distance changes the
*target* distribution, so the minimiser itself changes: near-identical protocols are asked to
share probability mass instead of being pushed apart as hard negatives.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.distributed as dist
from torch import nn

from radlens.errors import ConfigError

Mode = Literal["clip", "multi_positive", "soft", "findings"]
MODES: tuple[str, ...] = get_args(Mode)


def _distributed() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the autograd graph to every rank."""
    if _distributed()[1] == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (labels, metadata) from all ranks along dim 0, without gradients."""
    _, world = _distributed()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def label_targets(local_labels: torch.Tensor, all_labels: torch.Tensor, offset: int) -> torch.Tensor:
    """Rows sum to 1, uniform over the columns with the same label; a label < 0 matches only itself."""
    same = (local_labels[:, None] == all_labels[None, :]) & (local_labels[:, None] >= 0)
    eye = _local_identity(len(local_labels), len(all_labels), offset, local_labels.device)
    positive = (same | eye.bool()).to(torch.float32)
    return positive / positive.sum(dim=1, keepdim=True)


def time_kernel(
    local_times: torch.Tensor, all_times: torch.Tensor, sigma: float = 0.1, time_unit: float = 1e-3
) -> torch.Tensor:
    """Gaussian kernel ``exp(-d^2 / 2 sigma^2)`` on log-times ``log(1 + t / time_unit)``.

    ``times`` is (N, k) in seconds (e.g. TE, TR, TI) with NaN for a missing value. A field
    missing in both items adds no distance; missing in only one gives kernel 0 (not comparable).
    Log-times make the distance relative: TE 10 vs 11 ms is close, 10 vs 20 ms is not. An item
    is always comparable with itself, so every row of the kernel has a positive sum.
    """
    a = torch.log1p(local_times.float().clamp(min=0) / time_unit)
    b = torch.log1p(all_times.float().clamp(min=0) / time_unit)
    diff = a[:, None, :] - b[None, :, :]
    na, nb = torch.isnan(a)[:, None, :], torch.isnan(b)[None, :, :]
    d2 = torch.where(na & nb, torch.zeros_like(diff), diff.square()).sum(-1)
    kernel = torch.exp(-d2 / (2 * sigma**2))
    comparable = ~(na ^ nb).any(-1)
    return torch.where(comparable, kernel, torch.zeros_like(kernel))


def soft_targets(
    local_times: torch.Tensor,
    all_times: torch.Tensor,
    offset: int,
    alpha: float = 0.3,
    sigma: float = 0.1,
    time_unit: float = 1e-3,
) -> torch.Tensor:
    """``(1 - alpha) I + alpha K / rowsum(K)`` with K from :func:`time_kernel`; rows sum to 1."""
    eye = _local_identity(len(local_times), len(all_times), offset, local_times.device)
    kernel = time_kernel(local_times, all_times, sigma, time_unit)
    return (1 - alpha) * eye + alpha * kernel / kernel.sum(dim=1, keepdim=True)


def finding_kernel(local_findings: torch.Tensor, all_findings: torch.Tensor) -> torch.Tensor:
    """Jaccard overlap of multi-hot finding vectors ``(N, F)``; two scans without findings match fully.

    A scan with pleural effusion and cardiomegaly shares half its findings with one that has only
    pleural effusion (0.5), none with a normal scan (0). NaN (unknown) labels count as absent.
    """
    a = torch.nan_to_num(local_findings.float()).clamp(0, 1)
    b = torch.nan_to_num(all_findings.float()).clamp(0, 1)
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.ones_like(inter))


def finding_targets(
    local_findings: torch.Tensor, all_findings: torch.Tensor, offset: int, alpha: float = 0.3
) -> torch.Tensor:
    """``(1 - alpha) I + alpha K / rowsum(K)`` with K from :func:`finding_kernel`; rows sum to 1.

    Scans reporting the same findings share target mass instead of being pushed apart as hard
    negatives, so a small report-CLIP is pulled towards what the reports say about the image
    rather than towards memorising each report's wording (CT-RATE ships these labels).
    """
    eye = _local_identity(len(local_findings), len(all_findings), offset, local_findings.device)
    kernel = finding_kernel(local_findings, all_findings)
    return (1 - alpha) * eye + alpha * kernel / kernel.sum(dim=1, keepdim=True)


def _local_identity(n_local: int, n_all: int, offset: int, device: torch.device) -> torch.Tensor:
    """(n_local, n_all) one-hot of each local item's own column in the gathered batch."""
    eye = torch.zeros(n_local, n_all, device=device)
    eye[torch.arange(n_local, device=device), torch.arange(n_local, device=device) + offset] = 1.0
    return eye


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j T_ij log softmax(logits)_ij``."""
    return -(targets * logits.float().log_softmax(dim=1)).sum(dim=1).mean()


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with gathering built in.

    ``mode``: ``"clip"`` (one positive per row), ``"multi_positive"`` (needs ``labels``, (N,) int,
    -1 = unknown), ``"soft"`` (needs ``metadata``, (N, k) acquisition times in seconds, NaN
    missing) or ``"findings"`` (needs ``findings``, (N, F) multi-hot finding labels).
    ``forward(img, txt, logit_scale, labels=None, metadata=None, findings=None)`` takes L2-normalised
    (N, D) features and the already exponentiated scale, and returns the scalar local loss (mean of
    image->text and text->image), whose DDP-averaged gradient equals the global loss gradient.
    Under torch.distributed every rank must pass the same local batch size (``drop_last=True``).
    """

    def __init__(
        self,
        mode: Mode = "clip",
        alpha: float = 0.3,
        sigma: float = 0.1,
        time_unit: float = 1e-3,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"loss mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode, self.alpha, self.sigma, self.time_unit, self.gather = mode, alpha, sigma, time_unit, gather

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        logit_scale: torch.Tensor,
        labels: torch.Tensor | None = None,
        metadata: torch.Tensor | None = None,
        findings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rank, world = _distributed() if self.gather else (0, 1)
        all_img, all_txt = (gather_with_grad(img), gather_with_grad(txt)) if world > 1 else (img, txt)
        offset = rank * img.shape[0]
        logits_i2t = logit_scale * img @ all_txt.T
        logits_t2i = logit_scale * txt @ all_img.T
        targets = self._targets(img.shape[0], all_img.shape[0], offset, labels, metadata, findings, img.device, world)
        return (soft_cross_entropy(logits_i2t, targets) + soft_cross_entropy(logits_t2i, targets)) / 2

    def _targets(
        self,
        n_local: int,
        n_all: int,
        offset: int,
        labels: torch.Tensor | None,
        metadata: torch.Tensor | None,
        findings: torch.Tensor | None,
        device: torch.device,
        world: int,
    ) -> torch.Tensor:
        if self.mode == "clip":
            return _local_identity(n_local, n_all, offset, device)
        if self.mode == "multi_positive":
            if labels is None:
                raise ConfigError("loss mode 'multi_positive' needs labels (N,) per batch")
            all_labels = gather_no_grad(labels) if world > 1 else labels
            return label_targets(labels, all_labels, offset)
        if self.mode == "findings":
            if findings is None or findings.shape[-1] == 0:
                raise ConfigError("loss mode 'findings' needs finding labels (N, F) per batch; the dataset has none")
            all_findings = gather_no_grad(findings) if world > 1 else findings
            return finding_targets(findings, all_findings, offset, self.alpha)
        if metadata is None:
            raise ConfigError("loss mode 'soft' needs metadata (N, k) acquisition times per batch")
        all_meta = gather_no_grad(metadata) if world > 1 else metadata
        return soft_targets(metadata, all_meta, offset, self.alpha, self.sigma, self.time_unit)
