"""Volume-level retrieval metrics: volume -> volume MAP@K and the per-series majority vote over
slices (MR-CLIP), each with its chance level.

MAP@K ranks volumes by volume (a 2D series is the normalised mean of its slice embeddings) with
the query's own scan left out of its gallery. Relevance: the same protocol label, or, for finding
datasets, at least one shared positive finding (``findings``), or graded by the Jaccard index of
the two finding sets (``findings_jaccard``). One formula covers binary and graded relevance ``w``:
``AP@K = sum_i w_i * (w_1 + .. + w_i) / i`` over the top K, divided by the same sum for the ideal
order, so that a perfect ranking scores 1; for binary relevance this is the usual AP@K divided by
``min(K, R)``. Queries without a relevant item are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

QUERY_CHUNK = 1024  # queries per block: bounds the (queries x gallery) boolean masks


def _ap_sum(w: np.ndarray) -> np.ndarray:
    """``sum_i w_i * (w_1 + .. + w_i) / i`` along each row of ranked relevance weights."""
    return (w * np.cumsum(w, axis=1) / np.arange(1, w.shape[1] + 1)).sum(axis=1)


def _visible_relevance(relevance: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    rel = np.asarray(relevance, dtype=np.float64)
    return rel if exclude is None else np.where(exclude, 0.0, rel)


def top_k(sim: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and similarities of each row's k best gallery items, best first (excluded: -inf, last)."""
    sim = np.asarray(sim, dtype=np.float64)
    if exclude is not None:
        sim = np.where(exclude, -np.inf, sim)
    k = min(k, sim.shape[1])
    index = np.empty((len(sim), k), dtype=np.int64)
    for lo in range(0, len(sim), QUERY_CHUNK):
        block = sim[lo : lo + QUERY_CHUNK]
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1, kind="stable")
        index[lo : lo + QUERY_CHUNK] = np.take_along_axis(top, order, axis=1)
    return index, np.take_along_axis(sim, index, axis=1)


def average_precision_at_k(
    sim: np.ndarray, relevance: np.ndarray, k: int = 10, exclude: np.ndarray | None = None
) -> np.ndarray:
    """AP@k of every query (NaN when nothing is relevant), from (Q, G) similarities and relevance in [0, 1].

    ``exclude`` (Q, G) marks gallery items a query must not see (its own scan): they rank last
    and count as irrelevant. Normalised by the ideal ranking's value (module docstring).
    """
    # Hand-written: scikit-learn's average precision has no cut-off K, graded relevance or exclusions.
    rel = _visible_relevance(relevance, exclude)
    index, _ = top_k(sim, k, exclude)
    ideal = _ap_sum(-np.sort(-rel, axis=1)[:, : index.shape[1]])
    got = _ap_sum(np.take_along_axis(rel, index, axis=1))
    return np.where(ideal > 0, got / np.where(ideal > 0, ideal, 1.0), np.nan)


def chance_average_precision_at_k(relevance: np.ndarray, k: int = 10, exclude: np.ndarray | None = None) -> np.ndarray:
    """Exact expected AP@k of every query under a uniformly random ranking of its gallery.

    With n visible items of weights w (sum S, sum of squares S2), the item at rank i has
    E[w_i^2] = S2/n and E[w_i w_j] = (S^2 - S2)/(n(n-1)) for j < i, so
    E[sum_i w_i (w_1 + .. + w_i)/i] = sum_{i<=min(k,n)} (S2/n + (i-1)(S^2 - S2)/(n(n-1)))/i.
    """
    rel = _visible_relevance(relevance, exclude)
    n = np.full(len(rel), rel.shape[1]) if exclude is None else (~np.asarray(exclude)).sum(axis=1)
    k = min(k, rel.shape[1])
    s1, s2 = rel.sum(axis=1), (rel**2).sum(axis=1)
    i = np.arange(1, k + 1)
    n_safe = np.maximum(n, 1)[:, None]
    pair = ((s1**2 - s2)[:, None] / np.maximum(n_safe * (n_safe - 1), 1))
    expected = (np.where(i <= n_safe, (s2[:, None] / n_safe + (i - 1) * pair) / i, 0.0)).sum(axis=1)
    ideal = _ap_sum(-np.sort(-rel, axis=1)[:, :k])
    return np.where(ideal > 0, expected / np.where(ideal > 0, ideal, 1.0), np.nan)


def volume_map(
    emb: np.ndarray,
    labels: np.ndarray | None = None,
    findings: np.ndarray | None = None,
    scans: np.ndarray | None = None,
    k: int = 10,
) -> dict[str, float]:
    """Volume -> volume MAP@k with chance levels: ``v2v_label_MAP@k`` (same protocol label),
    ``v2v_findings_MAP@k`` (a shared positive finding), ``v2v_findings_jaccard_MAP@k``.

    ``emb`` (N, D) L2-normalised; ``labels`` (N,) with -1 unlabelled; ``findings`` (N, F) 0/1;
    ``scans`` (N,): volumes of the query's scan (itself, other reconstructions) are excluded.
    """
    emb = np.asarray(emb, dtype=np.float64)
    scans = np.arange(len(emb)) if scans is None else np.asarray(scans)
    sim, exclude = emb @ emb.T, scans[:, None] == scans[None, :]
    out: dict[str, float] = {}

    def add(prefix: str, relevance: np.ndarray) -> None:
        ap = average_precision_at_k(sim, relevance, k, exclude)
        chance = chance_average_precision_at_k(relevance, k, exclude)
        ok = ~np.isnan(ap)
        if ok.any():
            out.update({f"{prefix}_MAP@{k}": float(ap[ok].mean()), f"chance_{prefix}_MAP@{k}": float(chance[ok].mean()),
                        f"{prefix}_n_queries": float(ok.sum())})

    if labels is not None and (np.asarray(labels) >= 0).any():
        lab = np.asarray(labels)
        add("v2v_label", (lab[:, None] == lab[None, :]) & (lab >= 0)[:, None])
    if findings is not None and np.asarray(findings).size:
        pos = (np.nan_to_num(np.asarray(findings, dtype=np.float64)) > 0).astype(np.float64)
        shared = pos @ pos.T
        union = pos.sum(axis=1)[:, None] + pos.sum(axis=1)[None, :] - shared
        add("v2v_findings", shared > 0)
        add("v2v_findings_jaccard", shared / np.maximum(union, 1))
    return out


def majority_vote(groups: np.ndarray, votes: np.ndarray, scores: np.ndarray) -> pd.Series:
    """Per group, the most frequent vote; a tie goes to the vote with the larger summed score."""
    import pandas as pd

    tally = (pd.DataFrame({"group": groups, "vote": votes, "score": scores})
             .groupby(["group", "vote"], sort=False)["score"].agg(["size", "sum"]).reset_index())
    best = tally.sort_values(["size", "sum"], ascending=False, kind="stable").drop_duplicates("group")
    return best.set_index("group")["vote"]


def chance_vote_accuracy(
    n_votes: np.ndarray, truth: np.ndarray, gallery_votes: np.ndarray, draws: int = 10_000, seed: int = 0
) -> float:
    """Expected accuracy of the majority vote when each vote is a uniformly random gallery entry.

    Seeded simulation of the vote counts (multinomial over the gallery's vote frequencies) for
    each group size; a tie is split evenly between the tied votes (a random ranking's score sums
    favour none of them). ``n_votes``/``truth``: votes and true value of each group.
    """
    # A plurality's win probability with ties has no closed form that scipy offers: simulate.
    values, counts = np.unique(np.asarray(gallery_votes), return_counts=True)
    index = {v: i for i, v in enumerate(values.tolist())}
    rng = np.random.default_rng(seed)
    wins: dict[int, np.ndarray] = {}
    for n in np.unique(n_votes).tolist():
        tally = rng.multinomial(n, counts / counts.sum(), size=draws)
        top = tally == tally.max(axis=1, keepdims=True)
        wins[n] = (top / top.sum(axis=1, keepdims=True)).mean(axis=0)
    pairs = zip(np.asarray(n_votes).tolist(), np.asarray(truth).tolist())
    hits = [wins[n][index[t]] if t in index else 0.0 for n, t in pairs]
    return float(np.mean(hits)) if hits else float("nan")


def series_vote(
    sim_i2t: np.ndarray, gallery_labels: np.ndarray, labels: np.ndarray, series: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """MR-CLIP's per-volume majority vote: each series' label = the majority of its slices' top-1 text labels.

    ``sim_i2t`` (slices, texts); ``gallery_labels`` (texts,) and ``labels`` (slices,), -1 unlabelled.
    Returns ``series_label_acc``, its chance level ``chance_series_label_acc`` and ``n_series``.
    """
    import pandas as pd

    sim = np.asarray(sim_i2t)
    top1 = sim.argmax(axis=1)
    predicted = majority_vote(series, np.asarray(gallery_labels)[top1], sim[np.arange(len(sim)), top1])
    truth = pd.DataFrame({"series": series, "label": labels}).groupby("series", sort=False)["label"]
    truth = truth.agg(["first", "size"])
    truth = truth[truth["first"] >= 0]
    if truth.empty:
        return {}
    acc = float((predicted.loc[truth.index].to_numpy() == truth["first"].to_numpy()).mean())
    chance = chance_vote_accuracy(truth["size"].to_numpy(), truth["first"].to_numpy(), gallery_labels, seed=seed)
    return {"series_label_acc": acc, "chance_series_label_acc": chance, "n_series": float(len(truth))}
