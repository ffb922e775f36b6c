import math

import pytest

from trainer.metrics import auc, ndcg_at_k, ranking_report, recall_at_k


def test_recall_hand_computed():
    ranked = [["a", "b", "c"], ["x", "y", "z"], ["q", "r", "s"]]
    targets = ["c", "x", "nope"]
    assert recall_at_k(ranked, targets, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, targets, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, targets, 3) == pytest.approx(2 / 3)


def test_ndcg_hand_computed():
    ranked = [["a", "b", "c"], ["x", "y", "z"], ["q", "r", "s"]]
    targets = ["c", "x", "r"]
    # ranks 2, 0, 1 -> 1/log2(4), 1, 1/log2(3)
    expected3 = (0.5 + 1.0 + 1 / math.log2(3)) / 3
    assert ndcg_at_k(ranked, targets, 3) == pytest.approx(expected3)
    assert ndcg_at_k(ranked, targets, 2) == pytest.approx((1.0 + 1 / math.log2(3)) / 3)
    report = ranking_report(ranked, targets, ks=(1, 3))
    assert report == {"recall@1": pytest.approx(1 / 3), "recall@3": 1.0,
                      "ndcg@1": pytest.approx(1 / 3), "ndcg@3": pytest.approx(expected3)}


def test_metric_input_errors():
    with pytest.raises(ValueError):
        recall_at_k([["a"]], ["a", "b"], 1)
    with pytest.raises(ValueError):
        ndcg_at_k([["a"]], ["a"], 0)


def test_auc_hand_computed_with_ties():
    # pairs (pos, neg): (0.8,0.1) 1, (0.8,0.4) 1, (0.4,0.1) 1, (0.4,0.4) 0.5 -> 3.5 / 4
    assert auc([0.8, 0.4, 0.1, 0.4], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auc([0.1, 0.9], [1, 0]) == 0.0
    assert auc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5
    with pytest.raises(ValueError):
        auc([0.1, 0.2], [1, 1])
