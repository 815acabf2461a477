"""Image <-> text retrieval metrics: recall@K (instance and label level), mean/median rank, chance levels.

One rule covers every recall: a gallery item is *relevant* to a query when their keys are equal.
Instance level uses text identity as the key (slices of one series share a caption, and an
identical text is one gallery entry, not many), label level the protocol label, and "TE-bin
accuracy by retrieval" is R@1 with the TE bin as the key. The rank of a query is the 1-based
rank of its best-ranked relevant item; ties count in the query's favour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from radlens.metrics.volume_retrieval import QUERY_CHUNK

KS = (1, 5, 10)
INSTANCE_KS = (1, 5, 10, 50)  # instance level also reports R@50 (R@k with k past the gallery size is 1)


def first_hit_ranks(sim: np.ndarray, query_keys: np.ndarray, gallery_keys: np.ndarray) -> np.ndarray:
    """1-based rank of the best relevant gallery item for every query (0 when none is relevant)."""
    sim = np.asarray(sim, dtype=np.float64)
    query_keys, gallery_keys = np.asarray(query_keys), np.asarray(gallery_keys)
    ranks = np.zeros(len(query_keys), dtype=np.int64)
    for lo in range(0, len(query_keys), QUERY_CHUNK):
        block = sim[lo : lo + QUERY_CHUNK]
        relevant = query_keys[lo : lo + QUERY_CHUNK, None] == gallery_keys[None, :]
        best = np.where(relevant, block, -np.inf).max(axis=1)
        found = relevant.any(axis=1)
        ranks[lo : lo + QUERY_CHUNK] = np.where(found, (block > best[:, None]).sum(axis=1) + 1, 0)
    return ranks


def recall_metrics(
    sim: np.ndarray, query_keys: np.ndarray, gallery_keys: np.ndarray, ks: Sequence[int] = KS
) -> dict[str, float]:
    """``R@k`` for each k, ``mean_rank``, ``median_rank`` over the queries that have a relevant item."""
    ranks = first_hit_ranks(sim, query_keys, gallery_keys)
    ranks = ranks[ranks > 0]
    if len(ranks) == 0:
        return {"n_queries": 0.0}
    out = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    out.update(mean_rank=float(ranks.mean()), median_rank=float(np.median(ranks)), n_queries=float(len(ranks)))
    return out


def chance_recall(query_keys: np.ndarray, gallery_keys: np.ndarray, k: int) -> float:
    """Expected R@k of a random ranking: mean over queries of P(at least one of m relevant in the top k)."""
    from scipy.stats import hypergeom

    gallery_keys = np.asarray(gallery_keys)
    values, counts = np.unique(gallery_keys, return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist()))
    m = np.array([lookup.get(q, 0) for q in np.asarray(query_keys).tolist()])
    m = m[m > 0]
    if len(m) == 0:
        return float("nan")
    n = len(gallery_keys)
    return float((1.0 - hypergeom.pmf(0, n, m, min(k, n))).mean())


def text_gallery(text_keys: np.ndarray) -> np.ndarray:
    """Index of the first item of every distinct text, in order of appearance: the text gallery."""
    _, first = np.unique(np.asarray(text_keys), return_index=True)
    return np.sort(first)


def clip_retrieval(
    img_emb: np.ndarray,
    txt_emb: np.ndarray,
    text_keys: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    attributes: Mapping[str, np.ndarray] | None = None,
    ks: Sequence[int] = KS,
    chance: bool = False,
    instance_ks: Sequence[int] | None = None,
) -> dict[str, float]:
    """Both directions of retrieval between N paired image and text embeddings (L2-normalised).

    ``text_keys`` (N,) marks identical texts (default: every text distinct); each distinct text is
    one gallery entry / one query. ``labels`` (N,) adds label-level metrics (``-1``: unlabelled,
    never a query, never a hit). ``attributes`` (name -> (N,) keys such as TE bins, -1 unknown) add
    ``i2t_{name}_acc``: does the top-1 text have the image's value (over images whose value is known). ``chance`` adds the expected
    value of every recall under a random ranking (``chance_...``). ``instance_ks`` (default
    ``ks``) are the k of the instance-level recalls.
    """
    img, txt = np.asarray(img_emb, dtype=np.float64), np.asarray(txt_emb, dtype=np.float64)
    n = len(img)
    keys = np.arange(n) if text_keys is None else np.asarray(text_keys)
    first = text_gallery(keys)
    sim_i2t = img @ txt[first].T  # images x distinct texts
    out: dict[str, float] = {}

    def add(prefix: str, sim: np.ndarray, q: np.ndarray, g: np.ndarray, metric_ks: Sequence[int]) -> None:
        for name, value in recall_metrics(sim, q, g, metric_ks).items():
            out[f"{prefix}_{name}"] = value
        if chance:
            for k in metric_ks:
                out[f"chance_{prefix}_R@{k}"] = chance_recall(q, g, k)

    add("i2t", sim_i2t, keys, keys[first], ks if instance_ks is None else instance_ks)
    add("t2i", sim_i2t.T, keys[first], keys, ks if instance_ks is None else instance_ks)
    if labels is not None and (np.asarray(labels) >= 0).any():
        lab = np.asarray(labels)
        labelled, first_labelled = lab >= 0, lab[first] >= 0
        add("i2t_label", sim_i2t[labelled], lab[labelled], _unknown_never_matches(lab)[first], ks)
        add("t2i_label", sim_i2t.T[first_labelled], lab[first][first_labelled], _unknown_never_matches(lab), ks)
    for name, values in (attributes or {}).items():
        v = np.asarray(values)
        known, gallery = v >= 0, _unknown_never_matches(v)[first]
        acc = recall_metrics(sim_i2t[known], v[known], gallery, (1,))
        if acc.get("n_queries"):
            out[f"i2t_{name}_acc"] = acc["R@1"]
            if chance:
                out[f"chance_i2t_{name}_acc"] = chance_recall(v[known], gallery, 1)
    return out


def _unknown_never_matches(values: np.ndarray) -> np.ndarray:
    """``values`` with -1 (unknown) replaced by a key no query has: queries are the known items
    only, and an unknown gallery item is never a hit."""
    return np.where(values >= 0, values, np.iinfo(np.int64).min)


def text_keys_of(texts: Sequence[str]) -> np.ndarray:
    """Integer key per text, equal for identical strings."""
    _, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return inverse.astype(np.int64)
