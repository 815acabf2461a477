"""Image <-> text retrieval: recall@K (instance and label level), mean/median rank, chance levels;
volume -> volume MAP@K and the per-series majority vote over slices (MR-CLIP).

One rule covers every recall: a gallery item is *relevant* to a query when their keys are equal.
Instance level uses text identity as the key (slices of one series share a caption, and an
identical text is one gallery entry, not many), label level the protocol label, and "TE-bin
accuracy by retrieval" is R@1 with the TE bin as the key. The rank of a query is the 1-based
rank of its best-ranked relevant item; ties count in the query's favour.

MAP@K ranks volumes by volume (a 2D series is the normalised mean of its slice embeddings) with
the query's own scan left out of its gallery. Relevance: the same protocol label, or, for finding
datasets, at least one shared positive finding (``findings``), or graded by the Jaccard index of
the two finding sets (``findings_jaccard``). One formula covers binary and graded relevance ``w``:
``AP@K = sum_i w_i * (w_1 + .. + w_i) / i`` over the top K, divided by the same sum for the ideal
order, so that a perfect ranking scores 1; for binary relevance this is the usual AP@K divided by
``min(K, R)``. Queries without a relevant item are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

KS = (1, 5, 10)
INSTANCE_KS = (1, 5, 10, 50)  # instance level also reports R@50 (R@k with k past the gallery size is 1)
_CHUNK = 1024  # queries per block: bounds the (queries x gallery) boolean masks


def first_hit_ranks(sim: np.ndarray, query_keys: np.ndarray, gallery_keys: np.ndarray) -> np.ndarray:
    """1-based rank of the best relevant gallery item for every query (0 when none is relevant)."""
    sim = np.asarray(sim, dtype=np.float64)
    query_keys, gallery_keys = np.asarray(query_keys), np.asarray(gallery_keys)
    ranks = np.zeros(len(query_keys), dtype=np.int64)
    for lo in range(0, len(query_keys), _CHUNK):
        block = sim[lo : lo + _CHUNK]
        relevant = query_keys[lo : lo + _CHUNK, None] == gallery_keys[None, :]
        best = np.where(relevant, block, -np.inf).max(axis=1)
        found = relevant.any(axis=1)
        ranks[lo : lo + _CHUNK] = np.where(found, (block > best[:, None]).sum(axis=1) + 1, 0)
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
    for lo in range(0, len(sim), _CHUNK):
        block = sim[lo : lo + _CHUNK]
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1, kind="stable")
        index[lo : lo + _CHUNK] = np.take_along_axis(top, order, axis=1)
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
    never a query, never a hit). ``attributes`` (name -> (N,) keys such as TE bins) add
    ``i2t_{name}_acc``: does the top-1 text have the image's value. ``chance`` adds the expected
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
        # -1 never equals a query label: queries are the labelled items only, and an unlabelled
        # gallery item gets a key no query has.
        gallery_lab = np.where(lab >= 0, lab, np.iinfo(np.int64).min)
        labelled, first_labelled = lab >= 0, lab[first] >= 0
        add("i2t_label", sim_i2t[labelled], lab[labelled], gallery_lab[first], ks)
        add("t2i_label", sim_i2t.T[first_labelled], lab[first][first_labelled], gallery_lab, ks)
    for name, values in (attributes or {}).items():
        v = np.asarray(values)
        acc = recall_metrics(sim_i2t, v, v[first], (1,))
        if acc.get("n_queries"):
            out[f"i2t_{name}_acc"] = acc["R@1"]
            if chance:
                out[f"chance_i2t_{name}_acc"] = chance_recall(v, v[first], 1)
    return out


def text_keys_of(texts: Sequence[str]) -> np.ndarray:
    """Integer key per text, equal for identical strings."""
    _, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    return inverse.astype(np.int64)


def summarise(metrics: Mapping[str, Any], names: Sequence[str]) -> str:
    """One line ``name=value (chance c)`` for the named metrics that exist."""
    parts = []
    for name in names:
        if name in metrics:
            c = metrics.get(f"chance_{name}")
            parts.append(f"{name}={metrics[name]:.3f}" + (f" (chance {c:.3f})" if c is not None else ""))
    return ", ".join(parts)


def resolve_bundle(bundle_or_run: str | Path) -> Path:
    """A bundle folder: the given one, or a run folder's ``best/`` (``last/`` when there is no best)."""
    path = Path(bundle_or_run)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    raise InputError(path, "neither a model bundle nor a run folder with best/ or last/ bundles")


def embed_split(
    model: Any, dataset: Any, batch_size: int = 32, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image embeddings of every item and text embeddings of every distinct text, each computed once.

    Returns ``(img_emb (N, D), txt_emb (N, D), text_keys (N,))``; identical texts share one row.
    """
    import torch

    from radlens.evaluate.embed import embed_items

    keys = text_keys_of(dataset.texts)
    _, first = np.unique(keys, return_index=True)
    distinct = [dataset.texts[i] for i in first]
    model = model.to(device).eval()
    images = embed_items(dataset.prepared, model, dataset.table, batch_size, device)
    texts = []
    with torch.inference_mode():
        for lo in range(0, len(distinct), batch_size):
            tokens = {k: v.to(device) for k, v in model.tokenize(distinct[lo : lo + batch_size]).items()}
            texts.append(model.encode_text(tokens["input_ids"], tokens["attention_mask"]).float().cpu())
    txt = torch.cat(texts).numpy()
    # keys are ranks of the sorted distinct texts, the order np.unique returned `first` in.
    return images, txt[keys], keys


def evaluate_retrieval(
    bundle_or_run: str,
    prepared: str,
    split: str = "test",
    text_column: str = "text",
    out: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    map_k: int = 10,
    trace: bool = False,
    trace_k: int = 5,
    trace_queries: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """Retrieval metrics of a trained CLIP on a prepared dataset split (recall@K, volume MAP@K, series vote) vs chance.

    Embeds every item and every distinct text once, then reports (each next to its chance level):
    image->text and text->image R@1/5/10/50 and mean/median rank at instance level (same text;
    R@k is R@min(k, gallery size)); R@1/5/10 at label level (same protocol) when labels exist;
    TE/TR/TI-bin accuracy of the top-1 retrieved text when the bins exist; volume->volume MAP@K
    (a 2D series is the mean of its slice embeddings; the query's own scan is left out) by same
    protocol label, by a shared positive finding and Jaccard-weighted by finding overlap on
    finding datasets; and, for 2D datasets with labels, the series-level label accuracy of the
    majority vote over each series' slices' top-1 retrieved texts (MR-CLIP).

    Args:
        bundle_or_run: a bundle folder or a training run folder (its ``best/`` bundle).
        prepared: the prepared dataset folder.
        split: ``train``, ``validation`` or ``test``.
        text_column: ``text`` or a report section column.
        out: output folder (replaced as a whole): ``metrics.json``, ``run.json``, and with
            ``--trace`` the trace files.
        batch_size: items per forward pass.
        device: ``auto`` (GPU when present), ``cpu`` or ``cuda``.
        map_k: K of volume->volume MAP@K.
        trace: also write ``trace.csv`` (the top ``trace_k`` of every query: direction, query_id,
            rank, retrieved_id, similarity, same_text, same_label, shared_findings),
            ``trace_texts.csv`` (text ids -> texts) and image grids ``trace_t2i.png`` and
            ``trace_v2v.png`` (query, then its top ``trace_k``) for a sample of queries.
        trace_k: retrieved items per query in the trace.
        trace_queries: queries shown in each trace grid.
        seed: picks the grid's queries and seeds the majority-vote chance simulation.
    """
    config = dict(locals())
    import torch

    from radlens.data.datasets import ClipDataset
    from radlens.evaluate.embed import check_compatible, run_info, staged_output
    from radlens.evaluate.retrieval_trace import volumes_of, write_trace
    from radlens.models.bundle import load_bundle
    from radlens.prepare.dataset import write_json_atomic

    if trace and out is None:
        raise ConfigError("--trace writes files: give --out")
    if min(map_k, trace_k, trace_queries) < 1:
        raise ConfigError(f"map_k, trace_k and trace_queries must be >= 1, got {map_k}, {trace_k}, {trace_queries}")
    bundle = resolve_bundle(bundle_or_run)
    clip = load_bundle(bundle)
    dataset = ClipDataset(prepared, split, text_column)
    check_compatible(clip, dataset.prepared)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    img, txt, keys = embed_split(clip, dataset, batch_size, dev)
    attributes = {c: dataset.table[c].to_numpy() for c in ("TE_bin", "TR_bin", "TI_bin") if c in dataset.table}
    attributes = {c: v.astype(np.int64) for c, v in attributes.items() if not np.isnan(v.astype(np.float64)).any()}
    metrics = clip_retrieval(img, txt, text_keys=keys, labels=dataset.labels, attributes=attributes, chance=True,
                             instance_ks=INSTANCE_KS)
    volumes = volumes_of(dataset, img, keys)
    metrics.update(volume_map(volumes.emb, volumes.side.labels, volumes.side.findings, volumes.scans, map_k))
    gallery = text_gallery(keys)
    sim_i2t = img @ txt[gallery].T
    if dataset.prepared.dims == 2:
        series = dataset.table["series_id"].to_numpy()
        metrics.update(series_vote(sim_i2t, dataset.labels[gallery], dataset.labels, series, seed))
    metrics.update(n_items=float(len(dataset)), n_texts=float(len(gallery)), n_volumes=float(len(volumes.emb)))
    print(summarise(metrics, ["i2t_R@1", "t2i_R@5", "i2t_label_R@1", "t2i_label_R@1", "i2t_TE_bin_acc",
                              "i2t_TR_bin_acc", "series_label_acc", f"v2v_label_MAP@{map_k}",
                              f"v2v_findings_MAP@{map_k}"]))
    if out is not None:
        config.update(model=str(bundle), prepared=str(prepared))
        with staged_output(out) as tmp:
            write_json_atomic(tmp / "metrics.json", metrics)
            write_json_atomic(tmp / "run.json", run_info("evaluate retrieval", config, seed))
            if trace:
                write_trace(tmp, dataset, sim_i2t, keys, volumes, trace_k, trace_queries, seed)
    return metrics
