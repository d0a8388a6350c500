"""Chance baselines against brute force over every order, and slmkit's own metric functions."""

import itertools
import math

import numpy as np
import pytest

from slmkit.benchmark import baselines as B
from slmkit.benchmark import stats as S
from slmkit.benchmark.quality import rouge_l
from slmkit.tasks import metrics as M


def _scores_for_order(order):
    """Scores that rank candidate order[0] first, order[1] second, ..."""
    scores = np.empty(len(order))
    scores[list(order)] = np.arange(len(order), 0, -1)
    return scores


@pytest.mark.parametrize("n", range(1, 7))
def test_expected_ndcg_and_mrr_match_every_permutation(n):
    for r in range(n + 1):
        rel = np.array([1] * r + [0] * (n - r))
        orders = list(itertools.permutations(range(n)))
        rrs = [M.reciprocal_rank(_scores_for_order(o), rel) for o in orders]
        assert B.expected_reciprocal_rank(n, r) == (None if r == 0 else pytest.approx(np.mean(rrs)))
        for k in (1, 2, 3, 5, 10):
            ndcgs = [M.ndcg_at_k(_scores_for_order(o), rel, k) for o in orders]
            expected = B.expected_ndcg_at_k(n, r, k)
            assert expected == (None if r == 0 else pytest.approx(np.mean(ndcgs), abs=1e-12))


def test_random_ranking_baseline_is_the_mean_of_ranking_metrics_over_all_orders():
    # groups: a single candidate, one without a relevant item, and three rankable ones
    relevance = [1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0]
    groups = ["s", "z", "z", "a", "a", "b", "b", "b", "c", "c", "c", "c"]
    rows = M.group_indices(groups)
    per_group_orders = [list(itertools.permutations(idx)) for idx in rows.values()]
    for k in (1, 2, 3):
        figures = []
        for combo in itertools.product(*per_group_orders):
            scores = np.empty(len(groups))
            for order in combo:  # rank each group's rows in this combination's order
                scores[list(order)] = np.arange(len(order), 0, -1)
            figures.append(M.ranking_metrics(scores, relevance, groups, k))
        base = B.random_ranking_baseline(relevance, groups, k)
        assert base[f"ndcg@{k}"] == pytest.approx(np.mean([f[f"ndcg@{k}"] for f in figures]), abs=1e-12)
        assert base["mrr"] == pytest.approx(np.mean([f["mrr"] for f in figures]), abs=1e-12)
        counts = ("groups_evaluated", "groups_single_candidate", "groups_without_relevant")
        assert {c: base[c] for c in counts} == {c: figures[0][c] for c in counts} == {
            "groups_evaluated": 3, "groups_single_candidate": 1, "groups_without_relevant": 1}
    with pytest.raises(ValueError, match="binary"):
        B.random_ranking_baseline([2, 0], ["g", "g"])


def test_random_auc_is_the_mean_auc_over_all_orders():
    y = [1, 0, 0, 1, 0]
    aucs = [M.auc(_scores_for_order(o), y) for o in itertools.permutations(range(len(y)))]
    assert B.random_auc(y) == pytest.approx(np.mean(aucs)) == 0.5
    assert B.random_auc([1, 1]) is None is M.auc([0.1, 0.2], [1, 1])


def test_constant_predictor_figures_match_slmkit_metrics():
    y = np.array([0, 2, 2, 1, 2, 0, 2, 1, 2, 2])
    freq = B.label_frequencies(y)
    assert B.majority_accuracy(y) == M.accuracy(np.full(len(y), freq.argmax()), y) == 0.6
    const = np.tile(freq, (len(y), 1))
    assert B.base_rate_log_loss(y) == pytest.approx(M.log_loss(const, y))
    assert B.base_rate_log_loss(y) == pytest.approx(-sum(p * math.log(p) for p in freq))  # the entropy
    assert B.base_rate_ece(y) == pytest.approx(M.expected_calibration_error(const, y), abs=1e-12)
    # a prior fitted elsewhere (train data), with a label the eval data has but the prior never predicts
    prior = np.array([0.5, 0.0, 0.5])
    const = np.tile(prior, (len(y), 1))
    assert B.base_rate_log_loss(y, prior) == pytest.approx(M.log_loss(const, y))  # clipped at eps
    assert B.base_rate_ece(y, prior) == pytest.approx(M.expected_calibration_error(const, y))
    assert B.base_rate_ece(y, prior) == pytest.approx(abs(0.2 - 0.5))


def test_binary_base_rate_matches_binary_metric_inputs():
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0])
    p_pos = np.full(len(y), B.label_frequencies(y)[1])
    assert B.base_rate_log_loss(y) == pytest.approx(M.log_loss(p_pos, y))
    assert B.base_rate_ece(y) == pytest.approx(M.expected_calibration_error(p_pos, y), abs=1e-12)
    assert B.majority_accuracy(y) == M.binary_metrics(p_pos, y)["accuracy"] == 0.75


def test_unigram_perplexity_by_hand():
    # counts [2, 1, 1, 0] over V = 4, add-one: p = [3, 2, 2, 1] / 8
    train, eval_ids = [0, 0, 1, 2], [0, 3, 1]
    by_hand = math.exp(-(math.log(3 / 8) + math.log(1 / 8) + math.log(2 / 8)) / 3)
    assert B.unigram_perplexity(train, eval_ids, 4) == pytest.approx(by_hand)
    nll, count = B.unigram_nll(train, [[0, 3], [1]], 4)
    assert count.tolist() == [2.0, 1.0]
    assert S.figure_value(S.PerExample(nll, count), "perplexity") == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="token ids"):
        B.unigram_perplexity(train, [4], 4)


def test_trivial_answers_scored_with_quality_functions():
    assert B.first_sentence("  What is 2+2? Answer briefly.") == "What is 2+2?"
    assert B.first_sentence("Name a colour\nthen explain.") == "Name a colour"
    assert B.first_sentence("e.g.x is fine. Next") == "e.g.x is fine."
    questions = ["What is the capital of France? One word.", "Say hello."]
    refs = ["The capital of France is Paris.", "hello"]
    s = B.answer_scores([B.first_sentence(q) for q in questions], refs)
    by_hand = [rouge_l("What is the capital of France?", refs[0]), rouge_l("Say hello.", "hello")]
    assert s["rouge_l"].tolist() == by_hand
    assert s["contains"].tolist() == [0.0, 1.0] and s["exact_match"].tolist() == [0.0, 0.0]
    assert B.answer_scores(["hello"] * 2, refs)["exact_match"].tolist() == [0.0, 1.0]


def test_above_baseline_both_directions():
    assert B.above_baseline(0.8, 0.9, 0.5) == pytest.approx(0.75)  # higher is better
    # perplexity: lower is better; (baseline - model) / (baseline - teacher) is the same number
    assert B.above_baseline(12.0, 10.0, 50.0) == pytest.approx((50 - 12) / (50 - 10))
    assert B.above_baseline(10.0, 10.0, 50.0) == 1.0 and B.above_baseline(50.0, 10.0, 50.0) == 0.0
    assert B.above_baseline(0.8, 0.5, 0.5) is None and B.above_baseline(None, 0.9, 0.5) is None
    rows = S.above_baseline_rows(np.array([0.8, 12.0]), np.array([0.9, 10.0]), np.array([0.5, 50.0]))
    assert rows == pytest.approx([0.75, 38 / 40])
