"""Group bootstrap of task figures: points equal the metrics, resamples treat a group drawn twice as
two groups, baselines are the exact expectations, and ratios above chance follow their definition."""

import numpy as np
import pytest

from slmkit.benchmark import baselines as B
from slmkit.tasks import bootstrap as BS
from slmkit.tasks import metrics as M


def ranking_data(groups=12, cands=6, seed=0, skill=1.0):
    """Per row: P(relevant), label, group; one relevant per group (plus a one-candidate group)."""
    rng = np.random.default_rng(seed)
    y, g = [], []
    for i in range(groups):
        labels = np.zeros(cands, dtype=int)
        labels[rng.integers(cands)] = 1
        y += labels.tolist()
        g += [f"q{i}"] * cands
    y += [0]
    g += ["single"]
    y = np.array(y)
    logit = skill * (2 * y - 1) + rng.normal(size=len(y))
    p = 1 / (1 + np.exp(-logit))
    return np.stack([1 - p, p], axis=1), y, g


def test_point_is_the_metrics_on_all_the_data():
    probs, y, g = ranking_data()
    units = BS.Units.of(g, len(y))
    s = BS.figure_samples(probs, y, units, BS.draws(units, 50), k=5, teacher=probs[::-1].copy())
    want = {**M.binary_metrics(probs[:, 1], y), **M.ranking_metrics(probs[:, 1], y, g, k=5)}
    for f in ("auc", "accuracy", "log_loss", "ece", "ndcg@5", "mrr"):
        assert s[f][0] == pytest.approx(want[f], abs=1e-12), f
    assert s["teacher_label_agreement"][0] == pytest.approx((probs.argmax(1) == probs[::-1].argmax(1)).mean())
    assert s["teacher_score_spearman"][0] == pytest.approx(M.spearman(probs[:, 1], probs[::-1, 1]))


def test_a_group_drawn_twice_counts_as_two_groups():
    probs, y, g = ranking_data(groups=4)
    units = BS.Units.of(g, len(y))
    draw = np.array([[0, 0, 2, 4]])  # q0 twice, q2, and the single-candidate group
    s = BS.figure_samples(probs, y, units, draw, k=3)
    rows = np.concatenate([units.rows[j] for j in draw[0]])
    groups = np.repeat(np.arange(4), [len(units.rows[j]) for j in draw[0]])
    want = {**M.binary_metrics(probs[rows, 1], y[rows]), **M.ranking_metrics(probs[rows, 1], y[rows], groups, k=3)}
    for f in ("auc", "accuracy", "log_loss", "ece", "ndcg@3", "mrr"):
        assert s[f][0] == pytest.approx(want[f], abs=1e-12), f


def test_baselines_are_the_exact_expectations_and_use_the_given_prior():
    probs, y, g = ranking_data(groups=7, cands=5)
    units = BS.Units.of(g, len(y))
    base = BS.baseline_samples(y, units, BS.draws(units, 20), k=10, prior=[0.8, 0.2])
    chance = B.random_ranking_baseline(y, g, k=10)
    assert base["ndcg@10"][0][0] == pytest.approx(chance["ndcg@10"])
    assert base["mrr"][0][0] == pytest.approx(chance["mrr"])
    assert base["auc"][0][0] == 0.5
    assert base["accuracy"][0][0] == pytest.approx(B.majority_accuracy(y))
    assert base["log_loss"][0][0] == pytest.approx(B.base_rate_log_loss(y, [0.8, 0.2]))
    assert base["ece"][0][0] == pytest.approx(B.base_rate_ece(y, [0.8, 0.2]))
    assert "training labels" in base["log_loss"][1]
    own = BS.baseline_samples(y, units, BS.draws(units, 20), k=10)
    assert own["ece"][0][0] == pytest.approx(0.0) and "eval labels" in own["ece"][1]


def test_above_baseline_ratio_on_synthetic_scores():
    # teacher ranks the relevant item first everywhere; the model in half the groups, last in the others
    groups, cands = 10, 5
    y = np.tile(np.r_[1, np.zeros(cands - 1, dtype=int)], groups)
    g = np.repeat([f"q{i}" for i in range(groups)], cands)
    teacher = np.where(y == 1, 0.9, 0.1)
    model = teacher.copy()
    model[(np.arange(len(y)) // cands >= groups // 2) & (y == 1)] = 0.01
    units = BS.Units.of(list(g), len(y))
    idx = BS.draws(units, 500)
    t = BS.figure_samples(np.stack([1 - teacher, teacher], 1), y, units, idx)
    m = BS.figure_samples(np.stack([1 - model, model], 1), y, units, idx)
    b = BS.baseline_samples(y, units, idx)
    chance = B.expected_ndcg_at_k(cands, 1, 10)
    last = 1 / np.log2(cands + 1)  # NDCG of the relevant item at rank 5
    want_model = (1 + last) / 2
    assert m["ndcg@10"][0] == pytest.approx(want_model)
    p = BS.paired(m["ndcg@10"], t["ndcg@10"], True, b["ndcg@10"][0])
    assert p.above == pytest.approx((want_model - chance) / (1 - chance))
    assert p.above < want_model  # above chance is stricter than the plain ratio
    for ci, point in ((p.ci, want_model), (p.retained_ci, want_model), (p.above_ci, p.above)):
        assert ci[0] <= point <= ci[1]


def test_identical_model_and_teacher_retain_exactly_one():
    probs, y, g = ranking_data()
    units = BS.Units.of(g, len(y))
    idx = BS.draws(units, 200)
    s = BS.figure_samples(probs, y, units, idx)
    b = BS.baseline_samples(y, units, idx)
    for f in ("ndcg@10", "mrr", "auc"):
        p = BS.paired(s[f], s[f], True, b[f][0])
        assert p.retained_ci == (1.0, 1.0) and p.above == pytest.approx(1.0)
        assert p.above_ci == pytest.approx((1.0, 1.0))
        assert p.ci[0] <= s[f][0] <= p.ci[1]


def test_classification_resamples_rows_and_unit_values_pair_runs():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1, 1, 1], size=40)
    y = rng.integers(0, 3, size=40)
    units = BS.Units.of(None, len(y))
    assert len(units) == 40 and not units.grouped
    s = BS.figure_samples(probs, y, units, BS.draws(units, 30))
    assert set(s) == {"accuracy", "log_loss", "ece"}
    assert s["accuracy"][0] == pytest.approx(M.accuracy(probs.argmax(1), y))
    pe = BS.unit_values(probs, y, units)
    assert pe["log_loss"].num.sum() / pe["log_loss"].den.sum() == pytest.approx(M.log_loss(probs, y))
    assert "auc" not in BS.baseline_samples(y, units, BS.draws(units, 5), n_labels=3)


def test_same_seed_same_intervals():
    probs, y, g = ranking_data()
    units = BS.Units.of(g, len(y))
    a = BS.figure_samples(probs, y, units, BS.draws(units, 100, seed=4))
    b = BS.figure_samples(probs, y, units, BS.draws(units, 100, seed=4))
    assert all(np.array_equal(a[f], b[f], equal_nan=True) for f in a)
