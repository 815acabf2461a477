"""Seeded, rank-aware, resumable training batches for contrastive learning.

:class:`ClipBatchSampler` yields lists of ``(index, epoch)`` keys: the dataset gets the epoch
with every index, so per-item augmentation is seeded from ``(seed, epoch, index)`` even in
persistent workers that never see ``set_epoch``. The order depends only on ``(seed, epoch)``,
never on the global RNG, and the sampler can skip the batches already trained on, which makes a
mid-epoch resume continue exactly where the interrupted run stopped (Lightning asks the
:class:`ResumableLoader` for that position when it writes a checkpoint).

``groups`` (series ids or protocol labels, as integers) keep at most one item per group in a
batch: same-volume slices or same-protocol items in one batch are false negatives for a plain
CLIP loss. ``strata`` (e.g. lesion / no lesion) instead give every stratum an equal share of each
global batch (LeCL's balanced sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from radlens.errors import ConfigError

Key = tuple[int, int]


class ClipBatchSampler:
    """Batches of ``(index, epoch)`` for one rank, ``len(self)`` per epoch, always full.

    Every epoch draws a fresh permutation from ``(seed, epoch)``. Global batches of
    ``batch_size * world_size`` items are formed first (distinct groups across the global batch,
    when ``groups`` is given) and rank ``r`` takes the ``r``-th slice of each, so the negatives
    gathered across devices are distinct too.

    ``strata`` (one integer per item) balance the global batches instead: every stratum present
    gets ``global_batch // n_strata`` items of each (the remainder to strata drawn at random; a
    stratum with fewer items than its share gives all it has and the others fill up), each stratum
    drawn from its own stream of permutations, so a rare stratum is oversampled and a common one
    subsampled; an item is never twice in a batch. With one stratum, this is the plain shuffle.
    The epoch keeps ``n_items // global_batch`` batches. ``groups`` and ``strata`` exclude each other.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int = 0,
        groups: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
        strata: np.ndarray | None = None,
    ) -> None:
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.groups = None if groups is None else np.asarray(groups)
        self.strata = None if strata is None else np.asarray(strata)
        if self.groups is not None and self.strata is not None:
            raise ConfigError("a batch sampler takes groups (distinct items) or strata (balanced batches), not both")
        if self.strata is not None and len(self.strata) != n_items:
            raise ConfigError(f"strata has {len(self.strata)} entries for {n_items} items")
        self.global_batch = batch_size * world_size
        self.epoch = 0
        self._skip = 0
        if n_items < self.global_batch:
            raise ConfigError(f"{n_items} training items cannot fill one batch of {self.global_batch}")
        if self.groups is not None:
            if len(self.groups) != n_items:
                raise ConfigError(f"groups has {len(self.groups)} entries for {n_items} items")
            n_groups = len(np.unique(self.groups))
            if n_groups < self.global_batch:
                raise ConfigError(
                    f"only {n_groups} distinct groups: a batch of {self.global_batch} distinct items is impossible"
                )

    def __len__(self) -> int:
        return self.n_items // self.global_batch

    @property
    def sampler(self) -> ClipBatchSampler:
        """Lightning calls ``set_epoch`` on a loader's ``sampler`` and its ``batch_sampler.sampler``,
        never on the batch sampler itself; this makes the batch sampler its own ``sampler`` so that
        every epoch gets its own permutation and augmentation seeds (and a checkpoint its epoch)."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start; a new epoch forgets a pending resume skip (a run
        that ended at ``max_steps`` and is resumed to train longer starts a new epoch, as Lightning does)."""
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue ``epoch`` after its first ``batches_done`` batches (the next epoch if it was finished)."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.epoch, self._skip = epoch, batches_done

    def __iter__(self) -> Iterator[list[Key]]:
        # Read epoch and skip when iteration starts, not when iter() is called: Lightning sets the
        # epoch after it has created the DataLoader iterator.
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        lo = self.rank * self.batch_size
        for i, batch in enumerate(self.global_batches(epoch)):
            if i >= skip:
                yield [(int(j), epoch) for j in batch[lo : lo + self.batch_size]]

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All global batches of ``epoch`` (index arrays of ``batch_size * world_size``)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.strata is not None and len(np.unique(self.strata)) > 1:
            return self._balanced_batches(rng)
        if self.groups is None:
            order = rng.permutation(self.n_items)
            return [order[i * self.global_batch : (i + 1) * self.global_batch] for i in range(len(self))]
        return self._distinct_batches(rng)

    def _distinct_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Greedy first-fit of a stream of permutations into batches without repeated groups.

        Each item goes to the oldest open batch that lacks its group; a batch is emitted when
        full. Further permutations are drawn until ``len(self)`` batches exist, so the epoch
        length never varies.
        """
        assert self.groups is not None
        batches: list[np.ndarray] = []
        open_batches: list[tuple[set[Any], list[int]]] = []
        while True:
            for i in rng.permutation(self.n_items):
                g = self.groups[i]
                target = next((b for b in open_batches if g not in b[0]), None)
                if target is None:
                    target = (set(), [])
                    open_batches.append(target)
                target[0].add(g)
                target[1].append(int(i))
                if len(target[1]) == self.global_batch:
                    open_batches.remove(target)
                    batches.append(np.asarray(target[1]))
                    if len(batches) == len(self):
                        return batches


    def _balanced_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """``len(self)`` global batches with an equal share per stratum (class docstring), shuffled within."""
        assert self.strata is not None
        pools = [np.flatnonzero(self.strata == v) for v in np.unique(self.strata)]
        streams = [_Stream(pool, rng) for pool in pools]
        k, sizes = len(pools), np.array([len(p) for p in pools])
        batches = []
        for _ in range(len(self)):
            counts = np.full(k, self.global_batch // k)
            counts[rng.choice(k, self.global_batch - counts.sum(), replace=False)] += 1
            if (counts > sizes).any():  # a small stratum gives all it has; the others take over its deficit
                deficit = int((counts - sizes).clip(min=0).sum())
                counts = np.minimum(counts, sizes)
                for j in rng.permutation(k):
                    take = min(deficit, int(sizes[j] - counts[j]))
                    counts[j] += take
                    deficit -= take
            batch = np.concatenate([stream.take(int(c)) for stream, c in zip(streams, counts)])
            batches.append(rng.permutation(batch))
        return batches


class _Stream:
    """Items of one stratum in successive random permutations; a take never repeats an item."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator) -> None:
        self.pool, self.rng = pool, rng
        self.order, self.pos = rng.permutation(pool), 0

    def take(self, n: int) -> np.ndarray:
        head = self.order[self.pos : self.pos + n]
        self.pos += len(head)
        if len(head) == n:
            return head
        # A new permutation, the items just taken moved to its end so that this batch has no repeat.
        fresh = self.rng.permutation(self.pool)
        fresh = np.concatenate([fresh[~np.isin(fresh, head)], fresh[np.isin(fresh, head)]])
        self.order, self.pos = fresh, n - len(head)
        return np.concatenate([head, fresh[: self.pos]])


class ResumableLoader:
    """Mixin for a DataLoader whose batch sampler is a :class:`ClipBatchSampler`.

    Lightning stores ``state_dict()`` of a stateful train loader in its checkpoints and calls
    ``load_state_dict`` before iterating on resume. ``progress`` returns the number of batches
    the trainer has processed in the sampler's current epoch, the position really trained on
    (the sampler itself runs ahead by the workers' prefetch).
    """

    batch_sampler: ClipBatchSampler
    progress: Callable[[], int]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.batch_sampler.epoch), "batches": int(self.progress())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(state["epoch"], state["batches"])


def resumable_loader(
    dataset: Any,
    batch_sampler: ClipBatchSampler,
    progress: Callable[[], int],
    **loader_kwargs: Any,
) -> Any:
    """A ``torch.utils.data.DataLoader`` over ``batch_sampler`` that Lightning can resume mid-epoch."""
    from torch.utils.data import DataLoader

    class _Loader(ResumableLoader, DataLoader):
        pass

    loader = _Loader(dataset, batch_sampler=batch_sampler, **loader_kwargs)
    loader.progress = progress
    return loader
