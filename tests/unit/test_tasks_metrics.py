"""Predictive metrics against plain references and hand-computed values."""

import itertools
import math

import numpy as np
import pytest

from slmkit.tasks import metrics as M


def auc_reference(scores, y):
    """Pairwise definition: P(score_pos > score_neg) + 0.5 P(tie)."""
    pos = [s for s, l in zip(scores, y) if l == 1]
    neg = [s for s, l in zip(scores, y) if l == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_reference_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 6, size=40).astype(float)  # few distinct values: many ties
        y = rng.integers(0, 2, size=40)
        assert M.auc(scores, y) == pytest.approx(auc_reference(scores, y), abs=1e-12)


def test_auc_hand_values_and_single_class():
    assert M.auc([0.1, 0.9], [0, 1]) == 1.0
    assert M.auc([0.9, 0.1], [0, 1]) == 0.0
    assert M.auc([0.5, 0.5], [0, 1]) == 0.5
    assert M.auc([0.2, 0.3], [1, 1]) is None


def test_accuracy_and_log_loss():
    assert M.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    p, y = np.array([0.8, 0.3]), np.array([1, 0])
    assert M.log_loss(p, y) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert M.log_loss(probs, [2, 0]) == pytest.approx(-(math.log(0.3) + math.log(0.6)) / 2)


def ece_reference(p_pos, y, n_bins):
    """Loop over bins with the (lo, hi] convention on confidence = max(p, 1-p)."""
    conf = [max(p, 1 - p) for p in p_pos]
    correct = [int((p >= 0.5) == bool(l)) if p != 0.5 else int(l == 0) for p, l in zip(p_pos, y)]
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i, c in enumerate(conf) if (lo < c <= hi) or (b == 0 and c == 0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            avg = sum(conf[i] for i in idx) / len(idx)
            total += len(idx) / len(p_pos) * abs(acc - avg)
    return total


def test_ece_matches_reference_and_hand_value():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, size=200)
    y = rng.integers(0, 2, size=200)
    assert M.expected_calibration_error(p, y, n_bins=10) == pytest.approx(ece_reference(p, y, 10), abs=1e-12)
    # two rows, both conf 0.9, one right one wrong: |0.5 - 0.9| = 0.4
    assert M.expected_calibration_error(np.array([0.9, 0.1]), [1, 1]) == pytest.approx(0.4)
    # perfectly confident and right: 0
    assert M.expected_calibration_error(np.array([1.0, 0.0]), [1, 0]) == 0.0


def test_ndcg_hand_values():
    # relevant item ranked 2nd of 3: DCG = 1/log2(3), ideal = 1
    assert M.ndcg_at_k([0.9, 0.5, 0.1], [0, 1, 0], k=10) == pytest.approx(1 / math.log2(3))
    assert M.ndcg_at_k([0.1, 0.9], [0, 1], k=10) == 1.0
    # relevant item at rank 3, cut at k=2: 0
    assert M.ndcg_at_k([0.9, 0.5, 0.1], [0, 0, 1], k=2) == 0.0
    # graded: order [2,0,1] vs ideal [2,1,0]
    got = M.ndcg_at_k([3, 2, 1], [2, 0, 1], k=3)
    ideal = 3 + 1 / math.log2(3)
    assert got == pytest.approx((3 + 1 / math.log2(4)) / ideal)
    assert M.ndcg_at_k([1, 2], [0, 0], k=5) is None


def test_ties_get_no_free_credit():
    assert M.reciprocal_rank([0.5, 0.5, 0.5], [0, 0, 1]) == pytest.approx(1 / 3)


def test_ranking_metrics_reports_degenerate_groups():
    scores = [0.9, 0.1, 0.2, 0.8, 0.7, 0.3, 0.4]
    rel = [1, 0, 1, 0, 1, 0, 0]
    groups = ["a", "a", "b", "b", "c", "d", "d"]  # c: single candidate, d: no relevant
    out = M.ranking_metrics(scores, rel, groups, k=10)
    assert out["groups_evaluated"] == 2
    assert out["groups_single_candidate"] == 1
    assert out["groups_without_relevant"] == 1
    assert out["mrr"] == pytest.approx((1 + 0.5) / 2)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_ranking_metrics_all_single_candidate_is_none_not_crash():
    out = M.ranking_metrics([0.3, 0.4], [1, 0], ["a", "b"], k=5)
    assert out["ndcg@5"] is None and out["mrr"] is None and out["groups_single_candidate"] == 2


def test_binary_and_multiclass_metrics_and_retained():
    out = M.binary_metrics(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 1]))
    assert out["accuracy"] == 0.5 and out["auc"] == pytest.approx(0.75)
    mc = M.multiclass_metrics(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), np.array([0, 1]))
    assert mc["accuracy"] == 0.5
    assert M.retained(0.45, 0.5, "auc") == pytest.approx(0.9)
    assert M.retained(0.5, 0.4, "log_loss") == pytest.approx(0.8)
    assert M.retained(None, 0.4, "auc") is None
