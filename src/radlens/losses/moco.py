r"""MoCo v3's symmetrised InfoNCE, with LeCL's lesion-negative term.

For queries ``q`` (this rank's ``N`` items) and the keys ``k`` of the whole global batch (``M``
items, gathered across devices; keys carry no gradient, so a plain all-gather suffices), with
``q_i``, ``k_j`` L2-normalised, temperature ``T``, ``s_ij = q_i . k_j / T``, ``p(i)`` the column of
item ``i``'s own key and ``L`` the set of keys of lesion slices in the global batch::

    l(q, k) = 2T / N * sum_i [ -s_ip(i) + log( sum_j exp(s_ij) + w * sum_{j in L, j != p(i)} exp(s_ij) ) ]

The first sum is MoCo v3's InfoNCE denominator (``CrossEntropy(s_i, p(i)) * 2T``); in the second,
every lesion key of the global batch except the query's own positive enters the denominator a
second time, its logit weighted by ``w = lesion_weight`` (as ``exp(s_ij + log w)``), so lesion
slices push each other and every other query apart harder (LeCL). ``w = 0`` leaves the second sum
out: plain MoCo v3. The loss of a batch is symmetrised over the two views,
``l(q1, k2) + l(q2, k1)``.

Under ``torch.distributed`` each rank's loss uses its own queries against all keys (the positive of
rank ``r``'s item ``i`` is column ``r * N + i``); DDP's gradient averaging over ranks then gives the
gradient of the global mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from radlens.errors import ConfigError
from radlens.losses.contrastive import _distributed, gather_no_grad


def lecl_infonce(q: torch.Tensor, k: torch.Tensor, temperature: float, lesion: torch.Tensor | None = None,
                 lesion_weight: float = 0.0, offset: int = 0) -> torch.Tensor:
    """``l(q, k)`` of the module docstring: ``q`` ``(N, D)`` local queries, ``k`` ``(M, D)`` all keys,
    ``lesion`` ``(M,)`` (1 = lesion key; 0 or -1 = not), the positive of query ``i`` at column ``offset + i``.
    Inputs need not be normalised."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    logits = q @ k.T / temperature
    n = q.shape[0]
    target = torch.arange(n, device=q.device) + offset
    if lesion_weight > 0 and lesion is not None and bool((lesion == 1).any()):
        extra = (lesion == 1)[None, :].expand(n, -1).clone()
        extra[torch.arange(n, device=q.device), target] = False  # the own positive enters once only
        weighted = torch.where(extra, logits + math.log(lesion_weight), torch.full_like(logits, -math.inf))
        logits = torch.cat((logits, weighted), dim=1)
    return F.cross_entropy(logits, target) * (2 * temperature)


class MocoLoss(nn.Module):
    """``forward(q1, q2, k1, k2, lesion=None)`` -> ``l(q1, k2) + l(q2, k1)`` (module docstring), keys
    and lesion flags gathered across devices when ``gather`` and torch.distributed is initialised."""

    def __init__(self, temperature: float = 0.2, lesion_weight: float = 0.0, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"loss.temperature must be > 0, got {temperature}")
        if lesion_weight < 0:
            raise ConfigError(f"loss.lesion_weight must be >= 0, got {lesion_weight}")
        self.temperature, self.lesion_weight, self.gather = temperature, lesion_weight, gather

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                lesion: torch.Tensor | None = None) -> torch.Tensor:
        rank, world = _distributed() if self.gather else (0, 1)
        if world > 1:
            k1, k2 = gather_no_grad(k1.detach().contiguous()), gather_no_grad(k2.detach().contiguous())
            if lesion is not None:
                lesion = gather_no_grad(lesion)
        offset = rank * q1.shape[0]
        args = (self.temperature, lesion, self.lesion_weight, offset)
        return lecl_infonce(q1, k2, *args) + lecl_infonce(q2, k1, *args)
