"""What a retrieval evaluation retrieved, for people to look at: top-k tables and image grids;
and the per-volume view (2D series pooled) that volume MAP@K and the trace share.

``trace.csv`` has one row per (query, rank) for three directions: ``i2t`` (an item's image ->
distinct texts), ``t2i`` (a distinct text -> items) and ``v2v`` (a volume -> other volumes, its
own scan left out, as in MAP@K). Items are slices (2D, ``slice_id``) or volumes (3D,
``series_id``); volumes are series; texts are ``text-{j}``, listed in ``trace_texts.csv``.
``same_label`` is empty when either side is unlabelled; ``shared_findings`` (finding datasets)
counts the positive findings both sides have. The grids show, per sampled query, the query
(a text over the middle slice of the first series that carries it, or a volume's middle slice) then
its top k, every id in full. Captions of one template differ in a few fields only, so a text query's
title shows what sets it apart from the other queries of the grid (:func:`differing_parts`).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from radlens.data.datasets import ClipDataset

@dataclass(frozen=True)
class Side:
    """Queries or gallery of one direction: ids and what relevance is judged by."""

    ids: np.ndarray
    text_keys: np.ndarray
    labels: np.ndarray  # -1: unlabelled
    findings: np.ndarray | None = None  # (n, F) 0/1, None without findings

    def take(self, index: np.ndarray) -> Side:
        return Side(self.ids[index], self.text_keys[index], self.labels[index],
                    None if self.findings is None else self.findings[index])


@dataclass(frozen=True)
class Volumes:
    """The split's volumes (3D items, or 2D series): L2-normalised embeddings, scans, first item rows."""

    side: Side
    emb: np.ndarray
    scans: np.ndarray
    first: np.ndarray


def finding_matrix(dataset: ClipDataset) -> np.ndarray | None:
    """(N, F) 0/1 finding labels of the items (the card's ``findings`` columns), None without any."""
    names = [f for f in dataset.prepared.card.get("findings") or [] if f in dataset.table.columns]
    if not names:
        return None
    return (np.nan_to_num(dataset.table[names].to_numpy(dtype=np.float64)) > 0).astype(np.int8)


def volumes_of(dataset: ClipDataset, img: np.ndarray, text_keys: np.ndarray) -> Volumes:
    """One row per series: the normalised mean of its items' embeddings (a 3D item is its own mean)."""
    import pandas as pd

    codes, ids = pd.factorize(dataset.table["series_id"])
    emb = np.zeros((len(ids), img.shape[1]))
    np.add.at(emb, codes, np.asarray(img, dtype=np.float64))
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    first = np.unique(codes, return_index=True)[1]
    table = dataset.table
    scans = (table["scan_id"] if "scan_id" in table else table["series_id"]).to_numpy()[first]
    findings = finding_matrix(dataset)
    side = Side(np.asarray(ids).astype(str), np.asarray(text_keys)[first], dataset.labels[first],
                None if findings is None else findings[first])
    return Volumes(side, emb, scans, first)


def trace_table(
    direction: str, sim: np.ndarray, queries: Side, gallery: Side, k: int, exclude: np.ndarray | None = None
) -> pd.DataFrame:
    """The top-k rows of every query: direction, query_id, rank, retrieved_id, similarity and flags."""
    import pandas as pd

    from radlens.metrics.volume_retrieval import top_k

    index, values = top_k(sim, k, exclude)
    q = np.repeat(np.arange(len(index)), index.shape[1])
    g = index.ravel()
    labelled = (queries.labels[q] >= 0) & (gallery.labels[g] >= 0)
    table = pd.DataFrame({
        "direction": direction, "query_id": queries.ids[q],
        "rank": np.tile(np.arange(1, index.shape[1] + 1), len(index)),
        "retrieved_id": gallery.ids[g], "similarity": values.ravel(),
        "same_text": queries.text_keys[q] == gallery.text_keys[g],
        "same_label": pd.array(np.where(labelled, queries.labels[q] == gallery.labels[g], False), dtype="boolean"),
    })
    table.loc[~labelled, "same_label"] = pd.NA
    visible = np.isfinite(values.ravel())  # a query's own scan is never a hit, even to fill its top k
    if queries.findings is not None and gallery.findings is not None:
        table["shared_findings"] = (queries.findings[q] * gallery.findings[g]).sum(axis=1).astype(np.int64)
    return table[visible].reset_index(drop=True)


def _picture(dataset: ClipDataset, row: int, whole_series: bool = False) -> np.ndarray:
    """A 2D picture of item ``row``, anterior up: its slice (or with ``whole_series`` its series'
    middle slice), or a 3D volume's middle axial slice."""
    if dataset.prepared.dims == 2:
        if whole_series:
            array = dataset.prepared.array(dataset.table["series_id"].iat[row])
            return np.rot90(np.asarray(array[len(array) // 2], dtype=np.float32))
        return np.rot90(dataset.image(row)[0])
    volume = dataset.image(row)[0]
    return np.rot90(volume[:, :, volume.shape[2] // 2])


def _wrap_id(item_id: str, width: int = 34) -> str:
    """An id in full, broken over lines of ``width`` characters."""
    return "\n".join(textwrap.wrap(item_id, width, break_long_words=True, break_on_hyphens=False)) or item_id


# A caption group "Name (Field A, Field B): (value a, value b)", as in MR-CLIP's captions.
_GROUP = re.compile(r"([A-Za-z][\w ]*?) \(([^()]*)\): \(([^()]*)\)")


def text_parts(text: str) -> list[tuple[str, str]]:
    """A text as ``(field, value)`` parts: caption groups give one part per named field, the text between
    them one unnamed part per comma-separated piece; a text without groups (a report) one per sentence."""
    parts: list[tuple[str, str]] = []
    last = 0
    for match in _GROUP.finditer(text):
        names, values = [s.strip() for s in match.group(2).split(",")], [s.strip() for s in match.group(3).split(",")]
        parts += [("", p.strip()) for p in text[last:match.start()].split(",") if p.strip()]
        if len(names) == len(values):
            parts += list(zip(names, values))
        else:
            parts.append(("", match.group(0)))
        last = match.end()
    rest = text[last:]
    if last:
        parts += [("", p.strip()) for p in rest.split(",") if p.strip()]
    else:
        parts += [("", s.strip()) for s in re.split(r"(?<=[.!?;])\s+", rest) if s.strip()]
    return parts


def differing_parts(texts: list[str]) -> list[list[str]]:
    """Per text, its parts (:func:`text_parts`) that are not the same in every text, as ``field value``
    strings in text order; a lone text (nothing to differ from) keeps all its parts."""
    parted = [text_parts(t) for t in texts]
    common = set.intersection(*(set(p) for p in parted)) if len(parted) > 1 else set()
    return [[f"{name} {value}".strip() for name, value in parts if (name, value) not in common] for parts in parted]


def _mark(hit: dict[str, object]) -> str:
    """What a grid title says about a hit: same text, same label, other label (or nothing)."""
    import pandas as pd

    if hit["same_text"]:
        return "same text"
    if pd.isna(hit["same_label"]):
        return ""
    return "same label" if hit["same_label"] else "other label"


def _grid(
    path: Path, dataset: ClipDataset, table: pd.DataFrame, queries: list[tuple[str, str, int, bool]],
    rows_of: dict[str, int], whole_series: bool,
) -> Path:
    """One grid row per query (id, title, picture row, picture of its whole series): the query, then its
    retrieved items in rank order (``whole_series``: each hit's series' middle slice).

    Queries with fewer hits than the longest list (a gallery shrunk by their own scan) are left out.
    """
    from radlens.common.montage import save_montage

    images, titles = [], []
    columns = 1 + int(table["rank"].max())
    for query_id, title, row, query_series in queries:
        hits = table[table["query_id"] == query_id]
        if len(hits) < columns - 1:
            continue
        images.append(_picture(dataset, row, query_series))
        titles.append(title)
        for hit in hits.to_dict("records"):
            images.append(_picture(dataset, rows_of[hit["retrieved_id"]], whole_series))
            titles.append(f"#{hit['rank']} {_wrap_id(hit['retrieved_id'])}\n{hit['similarity']:.2f} {_mark(hit)}")
    return save_montage(images, titles, path, columns=columns)


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def _titles(text_ids: list[str], texts: list[str], width: int = 34, lines: int = 7) -> list[str]:
    """Grid titles of text queries: the text id, then what sets the text apart from the others shown
    (:func:`differing_parts`), wrapped to ``width`` and cut at ``lines`` lines."""
    out = []
    for text_id, parts in zip(text_ids, differing_parts(texts)):
        wrapped = textwrap.wrap("; ".join(parts), width, break_long_words=True) or ["(the same text)"]
        if len(wrapped) > lines - 1:
            wrapped = [*wrapped[: lines - 2], wrapped[lines - 2][: width - 4] + " ..."]
        out.append("\n".join([f"query {text_id}:", *wrapped]))
    return out


def write_trace(
    folder: Path, dataset: ClipDataset, sim_i2t: np.ndarray, text_keys: np.ndarray, volumes: Volumes,
    k: int = 5, n_queries: int = 8, seed: int = 0,
) -> list[Path]:
    """Write ``trace.csv``, ``trace_texts.csv``, ``trace_t2i.png`` and ``trace_v2v.png`` into ``folder``.

    ``sim_i2t`` (items, distinct texts) is the similarity to the text gallery
    (:func:`radlens.evaluate.retrieval.text_gallery` of ``text_keys``); the grids show
    ``n_queries`` queries drawn with ``seed``.
    """
    import pandas as pd

    from radlens.metrics.retrieval import text_gallery

    folder, keys = Path(folder), np.asarray(text_keys)
    gallery = text_gallery(keys)
    id_column = "slice_id" if dataset.prepared.dims == 2 else "series_id"
    items = Side(dataset.table[id_column].to_numpy().astype(str), keys, dataset.labels, finding_matrix(dataset))
    texts = items.take(gallery)
    texts = Side(np.array([f"text-{j}" for j in range(len(gallery))]), texts.text_keys, texts.labels, texts.findings)
    own_scan = volumes.scans[:, None] == volumes.scans[None, :]
    t2i = trace_table("t2i", sim_i2t.T, texts, items, k)
    v2v = trace_table("v2v", volumes.emb @ volumes.emb.T, volumes.side, volumes.side, k, own_scan)
    pd.concat([trace_table("i2t", sim_i2t, items, texts, k), t2i, v2v], ignore_index=True).to_csv(
        folder / "trace.csv", index=False)
    pd.DataFrame({"text_id": texts.ids, "n_items": np.bincount(keys)[keys[gallery]], "label": texts.labels,
                  "text": [dataset.texts[i] for i in gallery]}).to_csv(folder / "trace_texts.csv", index=False)
    written = [folder / "trace.csv", folder / "trace_texts.csv"]
    rng = np.random.default_rng(seed)
    picks = _sample(len(gallery), n_queries, rng)
    titles = _titles([str(texts.ids[j]) for j in picks], [dataset.texts[gallery[j]] for j in picks])
    # The query picture is the middle slice of the first series carrying the text (not its first slice,
    # which in 2D is an edge slice), the hits the retrieved items themselves.
    queries = [(texts.ids[j], title, int(gallery[j]), True) for j, title in zip(picks, titles)]
    item_rows = {v: i for i, v in enumerate(items.ids)}
    written.append(_grid(folder / "trace_t2i.png", dataset, t2i, queries, item_rows, whole_series=False))
    if len(v2v):
        ids = volumes.side.ids
        queries = [(ids[j], f"query {_wrap_id(ids[j])}", int(volumes.first[j]), True)
                   for j in _sample(len(ids), n_queries, rng)]
        volume_rows = {v: int(r) for v, r in zip(ids, volumes.first)}
        written.append(_grid(folder / "trace_v2v.png", dataset, v2v, queries, volume_rows, whole_series=True))
    return written
