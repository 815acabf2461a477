"""The ``evaluate retrieval`` command: image <-> text retrieval (:mod:`radlens.metrics.retrieval`) plus
the volume-level metrics of :mod:`radlens.metrics.volume_retrieval` (volume -> volume MAP@K,
per-series majority vote).

One rule covers every recall: a gallery item is *relevant* to a query when their keys are equal.
Instance level uses text identity as the key (slices of one series share a caption, and an
identical text is one gallery entry, not many), label level the protocol label, and "TE-bin
accuracy by retrieval" is R@1 with the TE bin as the key. The rank of a query is the 1-based
rank of its best-ranked relevant item; ties count in the query's favour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from radlens.errors import ConfigError
from radlens.metrics.retrieval import INSTANCE_KS, clip_retrieval, text_gallery, text_keys_of
from radlens.metrics.volume_retrieval import series_vote, volume_map


def summarise(metrics: Mapping[str, Any], names: Sequence[str]) -> str:
    """One line ``name=value (chance c)`` for the named metrics that exist."""
    parts = []
    for name in names:
        if name in metrics:
            c = metrics.get(f"chance_{name}")
            parts.append(f"{name}={metrics[name]:.3f}" + (f" (chance {c:.3f})" if c is not None else ""))
    return ", ".join(parts)


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
    bundle: str,
    prepared: str,
    out: str,
    split: str = "test",
    text_column: str = "text",
    batch_size: int = 32,
    device: str = "auto",
    map_k: int = 10,
    trace: bool = False,
    trace_k: int = 5,
    trace_queries: int = 8,
    seed: int = 0,
    overwrite: bool = False,
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
        bundle: a CLIP bundle folder or a training run folder (its ``best/`` bundle).
        prepared: the prepared dataset folder.
        out: output folder: ``metrics.json``, ``run.json``, and with ``--trace`` the trace files;
            a rerun replaces the files radlens wrote there, nothing else.
        split: ``train``, ``validation`` or ``test``.
        text_column: ``text`` or a report section column.
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
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
    """
    config = dict(locals())
    import torch

    from radlens.common.atomic import check_output, staged_output, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.data.datasets import ClipDataset
    from radlens.evaluate.retrieval_trace import volumes_of, write_trace
    from radlens.metrics.explain import split_notes
    from radlens.models.bundle import load_model, resolve_bundle
    from radlens.models.compat import check_compatible

    if min(map_k, trace_k, trace_queries) < 1:
        raise ConfigError(f"map_k, trace_k and trace_queries must be >= 1, got {map_k}, {trace_k}, {trace_queries}")
    check_output(out, overwrite)
    folder = resolve_bundle(bundle)
    clip = load_model(folder, kind="clip")
    dataset = ClipDataset(prepared, split, text_column)
    check_compatible(clip, dataset.prepared)
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    img, txt, keys = embed_split(clip, dataset, batch_size, dev)
    # A series whose sidecar lacks TE (say) has no TE bin: it is left out of the TE-bin accuracy only.
    attributes = {c: dataset.table[c].astype("Float64").fillna(-1).to_numpy(dtype=np.int64)
                  for c in ("TE_bin", "TR_bin", "TI_bin") if c in dataset.table}
    metrics = clip_retrieval(img, txt, text_keys=keys, labels=dataset.labels, attributes=attributes, chance=True,
                             instance_ks=INSTANCE_KS)
    volumes = volumes_of(dataset, img, keys)
    metrics.update(volume_map(volumes.emb, volumes.side.labels, volumes.side.findings, volumes.scans, map_k))
    gallery = text_gallery(keys)
    sim_i2t = img @ txt[gallery].T
    if dataset.prepared.dims == 2:
        series = dataset.table["series_id"].to_numpy()
        metrics.update(series_vote(sim_i2t, dataset.labels[gallery], dataset.labels, series, seed))
    n_patients = int(dataset.table["patient_id"].nunique())
    metrics.update(n_items=float(len(dataset)), n_texts=float(len(gallery)), n_volumes=float(len(volumes.emb)),
                   n_patients=float(n_patients))
    notes = split_notes(n_patients, len(volumes.emb), "volume")
    print(summarise(metrics, ["i2t_R@1", "t2i_R@5", "i2t_label_R@1", "t2i_label_R@1", "i2t_TE_bin_acc",
                              "i2t_TR_bin_acc", "series_label_acc", f"v2v_label_MAP@{map_k}",
                              f"v2v_findings_MAP@{map_k}"]))
    print(f"{split}: {len(dataset)} items, {len(gallery)} distinct texts, {len(volumes.emb)} volumes from "
          f"{n_patients} patient(s)" + "".join(f"; {n}" for n in notes) + f" -> {out}")
    config.update(model=str(folder), prepared=str(prepared))
    with staged_output(out, overwrite, "evaluate retrieval") as tmp:
        write_json_atomic(tmp / "metrics.json", {**metrics, "split": split, "notes": notes})
        write_json_atomic(tmp / "run.json", run_info("evaluate retrieval", config, seed))
        if trace:
            write_trace(tmp, dataset, sim_i2t, keys, volumes, trace_k, trace_queries, seed)
    return metrics
