"""Retrieval metrics against values computed by hand; the evaluation command and its trace files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.prepared_clip import PROTOCOLS, caption, write_prepared
from support.prepared_findings import base_bundle, tiny_model, write_findings_prepared

from radlens.cli import main
from radlens.evaluate.retrieval import evaluate_retrieval
from radlens.metrics.retrieval import chance_recall, clip_retrieval, first_hit_ranks, recall_metrics

TRACE_COLUMNS = ["direction", "query_id", "rank", "retrieved_id", "similarity", "same_text", "same_label"]


def test_ranks_and_recalls_by_hand() -> None:
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    # query 0 -> key 0 ranked 1st; query 1 -> key 1: 0.3 < 0.8 -> rank 2; query 2 -> key 2: rank 3
    np.testing.assert_array_equal(first_hit_ranks(sim, np.arange(3), np.arange(3)), [1, 2, 3])
    m = recall_metrics(sim, np.arange(3), np.arange(3), ks=(1, 2))
    assert m == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "mean_rank": 2.0, "median_rank": 2.0,
                 "n_queries": 3.0}
    # label level: gallery labels [0, 1, 1]; query 2 (label 1) hits gallery 1 at rank 2
    np.testing.assert_array_equal(first_hit_ranks(sim, np.array([0, 1, 1]), np.array([0, 1, 1])), [1, 1, 2])


def test_clip_retrieval_dedups_identical_texts_and_uses_labels() -> None:
    img = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    m = clip_retrieval(img, txt, text_keys=np.array([0, 0, 1]), labels=np.array([5, 5, 7]), ks=(1,), chance=True)
    # image 2 (0,1) prefers text key 1 (0.8 vs 0): all images right at R@1
    assert m["i2t_R@1"] == 1.0 and m["i2t_n_queries"] == 3
    # text key 1 (0.6, 0.8): image 2 scores 0.8, images 0/1 score 0.6 -> right; two distinct text queries
    assert m["t2i_R@1"] == 1.0 and m["t2i_n_queries"] == 2
    assert m["i2t_label_R@1"] == 1.0
    assert m["chance_i2t_R@1"] == pytest.approx(0.5)  # 2 distinct texts, one relevant


def test_attribute_accuracy_leaves_out_unknown_values() -> None:
    img = np.eye(3)
    txt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.0, 0.1]])
    # TE bins: image 2's is unknown (no EchoTime), so it is no query; text 1 (bin 4) is image 1's own.
    m = clip_retrieval(img, txt, attributes={"TE_bin": np.array([3, 4, -1])}, chance=True)
    assert m["i2t_TE_bin_acc"] == 1.0
    # image 0's value 3 is 1 of the 3 gallery texts (the unknown one matches nothing)
    assert m["chance_i2t_TE_bin_acc"] == pytest.approx(1 / 3)
    # an image whose top text has an unknown bin is a miss, not a hit
    unknown_top = clip_retrieval(img, txt[[2, 1, 0]], attributes={"TE_bin": np.array([3, 4, -1])})
    assert unknown_top["i2t_TE_bin_acc"] == pytest.approx(0.5)


def test_chance_recall_matches_the_hypergeometric_by_hand() -> None:
    # gallery of 4 with 2 relevant, top-2: 1 - C(2,2)/C(4,2) = 5/6
    assert chance_recall(np.array([1]), np.array([1, 1, 0, 0]), 2) == pytest.approx(5 / 6)
    assert chance_recall(np.array([0, 9]), np.array([0, 1, 2, 3]), 1) == pytest.approx(0.25)


def test_map_at_k_by_hand() -> None:
    from radlens.metrics.volume_retrieval import average_precision_at_k

    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    rel = np.array([[0, 1, 0, 1]])
    # ranks 1..3: miss, hit (P@2 = 1/2), miss -> (1/2) / min(3, R=2)
    assert average_precision_at_k(sim, rel, k=3)[0] == pytest.approx(0.25)
    # all 4: (1/2 + 2/4) / 2
    assert average_precision_at_k(sim, rel, k=4)[0] == pytest.approx(0.5)
    # item 1 excluded: visible order 0, 2, 3 -> the one relevant item at rank 3: (1/3) / 1
    hidden = np.array([[False, True, False, False]])
    assert average_precision_at_k(sim, rel, k=3, exclude=hidden)[0] == pytest.approx(1 / 3)
    # graded (Jaccard) weights [0.5, 1, 0, 0], k=2: 0.5*0.5/1 + 1*1.5/2 = 1.0; ideal order [1, 0.5]: 1 + 0.5*1.5/2
    assert average_precision_at_k(sim, np.array([[0.5, 1, 0, 0]]), k=2)[0] == pytest.approx(1.0 / 1.375)
    assert np.isnan(average_precision_at_k(sim, np.zeros((1, 4)), k=2)[0])  # nothing relevant: not a query


def test_chance_map_is_exact() -> None:
    """The closed form equals the mean AP over every ordering of the gallery."""
    import itertools

    from radlens.metrics.volume_retrieval import average_precision_at_k, chance_average_precision_at_k

    # binary, R=2 of N=4, K=2: hand enumeration gives (1 + 2*0.5 + 2*0.25 + 0) / 6
    assert chance_average_precision_at_k(np.array([[1, 1, 0, 0]]), k=2)[0] == pytest.approx(5 / 12)
    rel = np.array([[0.5, 1.0, 0.0, 0.25, 1.0]])
    exclude = np.array([[False, False, False, False, True]])
    for k in (1, 2, 3, 5):
        brute = np.mean([average_precision_at_k(-np.array([p], dtype=float), rel, k, exclude)[0]
                         for p in itertools.permutations(range(5))])
        assert chance_average_precision_at_k(rel, k, exclude)[0] == pytest.approx(brute)


def test_volume_map_by_label_and_findings() -> None:
    from radlens.metrics.volume_retrieval import volume_map

    emb = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    m = volume_map(emb, labels=np.array([0, 0, 1, 1]), k=10)
    assert m["v2v_label_MAP@10"] == pytest.approx(1.0) and m["v2v_label_n_queries"] == 4
    # one relevant among 3 others, K clipped to 3: (1 + 1/2 + 1/3) / 3
    assert m["chance_v2v_label_MAP@10"] == pytest.approx(11 / 18)
    # volumes 0 and 1 are one scan: each other's only same-label volume is hidden -> no label queries left
    assert "v2v_label_MAP@10" not in volume_map(emb, labels=np.array([0, 0, 1, 2]), scans=np.array([7, 7, 8, 9]))
    findings = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    m = volume_map(emb, findings=findings, k=2)
    # volume 3 has no positive finding: not a query. 0 ranks [1 shares, 3]: AP 1; 1 ranks [0 shares, 3] of
    # R=2 sharing (0, 2): 1/2; 2 ranks [3, 1 shares]: (1/2) / 1
    assert m["v2v_findings_n_queries"] == 3
    assert m["v2v_findings_MAP@2"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert 0 < m["chance_v2v_findings_MAP@2"] < m["v2v_findings_MAP@2"]
    # Jaccard weights tell a partial from a full overlap: A={0,1} ranks B={0} (J=1/2) above C={0,1} (J=1)
    emb = np.array([[1.0, 0.0], [0.9, 0.436], [0.6, 0.8]])
    m = volume_map(emb, findings=np.array([[1, 1], [1, 0], [1, 1]]), k=2)
    assert m["v2v_findings_MAP@2"] == pytest.approx(1.0)  # everyone shares a finding with everyone
    # A and C: (0.5*0.5/1 + 1*1.5/2) / (1 + 0.5*1.5/2) = 1/1.375; B sees two J=1/2 volumes: 1
    assert m["v2v_findings_jaccard_MAP@2"] == pytest.approx((2 / 1.375 + 1) / 3)


def test_majority_vote_and_series_accuracy_by_hand() -> None:
    from radlens.metrics.volume_retrieval import majority_vote, series_vote

    groups = np.array(["a", "a", "a", "b", "b"])
    votes = majority_vote(groups, np.array([1, 1, 2, 3, 4]), np.array([0.1, 0.1, 0.9, 0.2, 0.5]))
    assert votes.to_dict() == {"a": 1, "b": 4}  # a: 2 votes beat 1; b: tie, 4 has the larger score
    # 5 slices x 3 texts (labels 0, 1, 1); series s1 (label 0): top-1 texts 0, 1, 0 -> 0, right;
    # series s2 (label 1): top-1 texts 0, 0 -> 0, wrong
    sim = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.2], [0.7, 0.0, 0.1], [0.6, 0.5, 0.1], [0.9, 0.0, 0.3]])
    m = series_vote(sim, np.array([0, 1, 1]), np.array([0, 0, 0, 1, 1]), np.array(["s1", "s1", "s1", "s2", "s2"]))
    assert m["series_label_acc"] == 0.5 and m["n_series"] == 2
    # chance: s1 (3 votes, p(0)=1/3) wins with P(>=2 of 3) + ties (1,1,1... impossible with 2 labels) = 7/27;
    # s2 (2 votes, p(1)=2/3): P(2 of 2) + half of P(1 of 2) = 4/9 + 2/9
    assert m["chance_series_label_acc"] == pytest.approx((7 / 27 + 6 / 9) / 2, abs=0.01)


def test_chance_vote_accuracy_single_vote_is_the_label_frequency() -> None:
    from radlens.metrics.volume_retrieval import chance_vote_accuracy

    gallery = np.array([0, 0, 0, 1])
    one_vote = chance_vote_accuracy(np.array([1, 1]), np.array([0, 1]), gallery)
    assert one_vote == pytest.approx((0.75 + 0.25) / 2, abs=0.01)
    assert chance_vote_accuracy(np.array([5]), np.array([9]), gallery) == 0.0  # a label no text has never wins


def test_instance_recall_at_50_clips_to_the_gallery() -> None:
    img = np.eye(3)
    m = clip_retrieval(img, img, ks=(1,), chance=True, instance_ks=(1, 50))
    assert m["i2t_R@50"] == 1.0 and m["chance_i2t_R@50"] == 1.0 and m["t2i_R@1"] == 1.0
    assert "i2t_label_R@50" not in m


@pytest.fixture(scope="module")
def prepared_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 test patients x 2 protocols x 4 slices of 64 x 64 (tiny-vit2d's input)."""
    return write_prepared(tmp_path_factory.mktemp("prep2d"), patients={"train": 1, "validation": 1, "test": 3})


@pytest.fixture(scope="module")
def bundle_2d(prepared_2d: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny-vit2d CLIP saved as a bundle for ``prepared_2d``."""
    import torch

    from radlens.data.modules import preprocessing_from_card
    from radlens.models.bundle import save_bundle
    from radlens.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("tiny-vit2d", texts=[caption(p) for p in PROTOCOLS] * 2)
    card = json.loads((prepared_2d / "dataset.json").read_text())
    return save_bundle(model, tmp_path_factory.mktemp("bundle") / "tiny", preprocessing_from_card(card))


def test_cli_trace_writes_top_k_tables_and_grids(prepared_2d: Path, bundle_2d: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from radlens.common import montage

    titles: dict[str, list[str]] = {}
    real = montage.save_montage
    monkeypatch.setattr(montage, "save_montage",
                        lambda images, names, path, **kw: titles.setdefault(Path(path).name, list(names)) and real(
                            images, names, path, **kw))
    out = tmp_path / "eval"
    assert main(["evaluate", "retrieval", str(bundle_2d), str(prepared_2d), str(out), "--trace",
                 "--trace_k", "3", "--trace_queries", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    counts = {k: metrics[k] for k in ("n_items", "n_texts", "n_volumes", "n_series")}
    assert counts == {"n_items": 24, "n_texts": 2, "n_volumes": 6, "n_series": 6}
    for key in ("i2t_R@50", "t2i_R@50", "series_label_acc", "v2v_label_MAP@10"):
        assert 0 <= metrics[key] <= 1 and 0 < metrics[f"chance_{key}"] <= 1
    assert metrics["chance_series_label_acc"] == pytest.approx(0.5)  # 2 equally frequent labels
    # 6 series, 3 per label, own series left out: 2 relevant of 5, K clipped to 5
    expected = sum((2 / 5 + (i - 1) * 2 / 20) / i for i in range(1, 6)) / 2
    assert metrics["chance_v2v_label_MAP@10"] == pytest.approx(expected)
    assert json.loads((out / "run.json").read_text())["config"]["trace"] is True
    trace = pd.read_csv(out / "trace.csv")
    assert list(trace.columns) == TRACE_COLUMNS
    sizes = trace.groupby("direction").size().to_dict()
    assert sizes == {"i2t": 24 * 2, "t2i": 2 * 3, "v2v": 6 * 3}  # i2t: only 2 distinct texts to rank
    v2v = trace[trace["direction"] == "v2v"]
    assert (v2v["query_id"] != v2v["retrieved_id"]).all()
    for _, rows in trace.groupby(["direction", "query_id"]):
        assert list(rows["rank"]) == list(range(1, len(rows) + 1)) and rows["similarity"].is_monotonic_decreasing
    i2t = trace[trace["direction"] == "i2t"]
    assert (i2t["same_text"] == i2t["same_label"]).all()  # one caption per protocol
    texts = pd.read_csv(out / "trace_texts.csv")
    assert list(texts["text_id"]) == ["text-0", "text-1"] and list(texts["n_items"]) == [12, 12]
    assert set(texts["text"]) == {caption(p) for p in PROTOCOLS[:2]}
    for name in ("trace_t2i.png", "trace_v2v.png"):
        width, height = Image.open(out / name).size
        assert width > height > 0  # 2 query rows of 1 + 3 pictures
    shown = "\n".join(titles["trace_t2i.png"]).replace("\n", "")
    assert all(sid in shown for sid in trace.loc[trace["direction"] == "t2i", "retrieved_id"])  # ids in full
    queries = [t for t in titles["trace_t2i.png"] if t.startswith("query")]
    assert len(queries) == 2 and queries[0] != queries[1]  # the two captions differ in TE/TR and description
    assert "Echo Time" in queries[0] or "Repetition Time" in queries[0]


def test_query_titles_show_what_differs() -> None:
    from radlens.evaluate.retrieval_trace import differing_parts, text_parts

    t1, t2 = caption(PROTOCOLS[0]), caption(PROTOCOLS[1])
    assert ("Echo Time", "0.01") in text_parts(t1) and ("", "plane axial") in text_parts(t1)
    assert differing_parts([t1, t2]) == [["Description t1_se", "Echo Time 0.01", "Repetition Time 0.5"],
                                         ["Description t2_tse", "Echo Time 0.1", "Repetition Time 4.0"]]
    report = "Heart size is normal. Small pleural effusion on the left. No nodule."
    other = "Heart size is normal. No pleural effusion. No nodule."
    assert differing_parts([report, other]) == [["Small pleural effusion on the left."], ["No pleural effusion."]]
    assert differing_parts([report]) == [["Heart size is normal.", "Small pleural effusion on the left.", "No nodule."]]


def test_findings_dataset_reports_volume_map_and_shared_findings(tmp_path: Path) -> None:
    prepared = write_findings_prepared(tmp_path / "prep", patients={"train": 1, "validation": 1, "test": 6},
                                       scans_per_patient=2)
    bundle = base_bundle(tmp_path / "bundle", prepared, tiny_model(tmp_path / "model.json"))
    metrics = evaluate_retrieval(str(bundle), str(prepared), str(tmp_path / "eval"), text_column="report_impression",
                                 trace=True, trace_k=2, map_k=5)
    test = pd.read_parquet(prepared / "series.parquet").query("split == 'test'")
    positive = test[["Pleural effusion", "Lung nodule"]].to_numpy()
    shared = positive @ positive.T
    np.fill_diagonal(shared, 0)  # one scan per volume here: only the query itself is left out
    assert metrics["v2v_findings_n_queries"] == (shared > 0).any(axis=1).sum()  # queries: a volume to find
    for key in ("v2v_findings_MAP@5", "v2v_findings_jaccard_MAP@5"):
        assert 0 <= metrics[key] <= 1 and 0 < metrics[f"chance_{key}"] < 1
    assert "v2v_label_MAP@5" not in metrics and "series_label_acc" not in metrics  # no protocol labels; 3D
    trace = pd.read_csv(tmp_path / "eval" / "trace.csv")
    assert list(trace.columns) == [*TRACE_COLUMNS, "shared_findings"]
    assert trace["same_label"].isna().all() and trace["shared_findings"].between(0, 2).all()
    assert (trace["direction"] == "v2v").sum() == 12 * 2


def test_trace_table_ranks_and_leaves_out_the_own_scan() -> None:
    from radlens.evaluate.retrieval_trace import Side, trace_table

    side = Side(np.array(["v0", "v1", "v2"]), np.array([0, 0, 1]), np.array([3, -1, 3]))
    sim = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.5], [0.2, 0.5, 1.0]])
    scans = np.array(["a", "a", "b"])
    table = trace_table("v2v", sim, side, side, k=2, exclude=scans[:, None] == scans[None, :])
    assert table[["query_id", "rank", "retrieved_id"]].values.tolist() == [
        ["v0", 1, "v2"], ["v1", 1, "v2"], ["v2", 1, "v1"], ["v2", 2, "v0"]]
    assert table["same_text"].tolist() == [False, False, False, False]
    assert table["same_label"].tolist()[0] is True and table["same_label"].isna().tolist() == [False, True, True, False]
