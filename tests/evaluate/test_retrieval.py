"""Retrieval metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from radlens.evaluate.retrieval import chance_recall, clip_retrieval, first_hit_ranks, recall_metrics


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


def test_chance_recall_matches_the_hypergeometric_by_hand() -> None:
    # gallery of 4 with 2 relevant, top-2: 1 - C(2,2)/C(4,2) = 5/6
    assert chance_recall(np.array([1]), np.array([1, 1, 0, 0]), 2) == pytest.approx(5 / 6)
    assert chance_recall(np.array([0, 9]), np.array([0, 1, 2, 3]), 1) == pytest.approx(0.25)
