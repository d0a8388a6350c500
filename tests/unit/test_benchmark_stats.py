"""Bootstrap intervals against known answers: coverage, normal approximations, pairing, determinism."""

import math

import numpy as np
import pytest

from slmkit.benchmark import stats as S
from slmkit.benchmark.quality import retained


def test_normal_mean_ci_covers_true_mean_at_nominal_rate_with_normal_half_width():
    mu, sd, n, experiments = 3.0, 2.0, 200, 200
    rng = np.random.default_rng(1)
    covered, half_widths = 0, []
    for e in range(experiments):
        x = rng.normal(mu, sd, size=n)
        lo, hi = S.bootstrap_ci(S.PerExample.of_values(x), n_resamples=1000, seed=e)
        covered += lo <= mu <= hi
        half_widths.append((hi - lo) / 2)
    # binomial sd of the coverage over 200 experiments is 0.015: a 3-sd band around 0.95
    assert 0.905 <= covered / experiments <= 0.995
    assert np.mean(half_widths) == pytest.approx(1.96 * sd / math.sqrt(n), rel=0.05)


def test_bernoulli_ci_matches_normal_approximation():
    x = (np.random.default_rng(2).random(400) < 0.3).astype(float)
    p = x.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / len(x))
    lo, hi = S.bootstrap_ci(S.PerExample.of_values(x), n_resamples=4000, seed=0)
    assert lo == pytest.approx(p - half, abs=0.15 * half)
    assert hi == pytest.approx(p + half, abs=0.15 * half)


def test_same_seed_same_interval_other_seed_other_interval():
    pe = S.PerExample.of_values(np.random.default_rng(3).normal(size=50))
    assert S.bootstrap_ci(pe, seed=7) == S.bootstrap_ci(pe, seed=7)
    assert S.bootstrap_ci(pe, seed=7) != S.bootstrap_ci(pe, seed=8)
    assert np.array_equal(S.resample_indices(50, 10, seed=7), S.resample_indices(50, 10, seed=7))


def test_ratio_of_sums_and_perplexity_figures():
    nll, tokens = np.array([2.0, 6.0, 1.0]), np.array([1.0, 4.0, 2.0])
    pe = S.PerExample(nll, tokens)
    assert S.figure_value(pe, "mean") == pytest.approx(9 / 7)
    assert S.figure_value(pe, "perplexity") == pytest.approx(math.exp(9 / 7))
    lo, hi = S.bootstrap_ci(pe, "perplexity")
    assert lo <= math.exp(9 / 7) <= hi
    with pytest.raises(ValueError, match="unknown figure"):
        S.bootstrap_ci(pe, "median")


def test_degenerate_inputs_collapse_or_give_none():
    assert S.bootstrap_ci(S.PerExample.of_values([0.4])) == (0.4, 0.4)  # one example: nothing varies
    flat = S.PerExample.of_values([0.1] * 37)  # all equal: every resample is the point
    assert S.bootstrap_ci(flat) == (S.figure_value(flat), S.figure_value(flat))
    assert S.bootstrap_ci(S.PerExample.of_values([])) is None
    assert S.bootstrap_ci(S.PerExample([1.0, 2.0], [0.0, 0.0])) is None  # no denominator at all
    # a zero-denominator resample (index 1 drawn twice) is dropped, not counted as 0 or inf
    lo, hi = S.bootstrap_ci(S.PerExample([1.0, 0.0], [1.0, 0.0]))
    assert lo == hi == 1.0
    assert S.percentile_ci(np.array([1.0, np.nan, np.nan])) is None  # mostly undefined
    with pytest.raises(ValueError):
        S.PerExample([1.0, 2.0], [1.0])


def _teacher_and_model(n=300, seed=4):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(0.5, 0.2, size=n)  # prompts differ a lot in difficulty
    return teacher, teacher + rng.normal(0.02, 0.01, size=n)  # the model tracks the teacher closely


def _width(ci):
    return ci[1] - ci[0]


def test_pairing_narrows_the_difference_interval():
    t, m = _teacher_and_model()
    ids = [f"ex{i}" for i in range(len(t))]
    perm = np.random.default_rng(5).permutation(len(t))  # b stored in another order: aligned by id
    paired = S.difference_significant(
        S.PerExample.of_values(t, ids), S.PerExample.of_values(m[perm], [ids[i] for i in perm])
    )
    unpaired = S.difference_significant(S.PerExample.of_values(t), S.PerExample.of_values(m))
    assert (paired.method, unpaired.method) == ("paired bootstrap", "unpaired bootstrap")
    assert paired.difference == pytest.approx(unpaired.difference) == pytest.approx((m - t).mean())
    assert _width(paired.ci) < _width(unpaired.ci) / 5
    assert paired.significant is True
    pb = S.paired_bootstrap(S.PerExample.of_values(t), S.PerExample.of_values(m))
    assert _width(pb.difference.ci) == pytest.approx(_width(paired.ci), rel=0.2)


def test_retained_ratio_ci_contains_point_and_matches_quality_retained():
    t, m = _teacher_and_model()
    for higher in (True, False):
        pb = S.paired_bootstrap(S.PerExample.of_values(t), S.PerExample.of_values(m), higher_is_better=higher)
        point = retained(m.mean(), t.mean(), higher)
        assert pb.quality_retained.value == pytest.approx(point)
        assert pb.quality_retained.ci[0] <= point <= pb.quality_retained.ci[1]
        assert pb.model.ci[0] <= m.mean() <= pb.model.ci[1]


def test_above_baseline_point_equals_hand_computation():
    teacher, model = np.array([0.9, 0.7, 0.8, 0.6]), np.array([0.7, 0.6, 0.8, 0.5])
    base = np.array([0.2, 0.3, 0.1, 0.2])  # a trivial answer scored on each prompt
    pb = S.paired_bootstrap(S.PerExample.of_values(teacher), S.PerExample.of_values(model),
                            baseline=S.PerExample.of_values(base))
    assert pb.above_baseline.value == pytest.approx((0.65 - 0.2) / (0.75 - 0.2))
    assert pb.above_baseline.ci[0] <= pb.above_baseline.value <= pb.above_baseline.ci[1]
    const = S.paired_bootstrap(S.PerExample.of_values(teacher), S.PerExample.of_values(model), baseline=0.5)
    assert const.above_baseline.value == pytest.approx((0.65 - 0.5) / (0.75 - 0.5))
    none = S.paired_bootstrap(S.PerExample.of_values(teacher), S.PerExample.of_values(model))
    assert none.above_baseline is None


def test_zero_teacher_ratio_is_undefined_unless_both_are_zero():
    zeros, ones = S.PerExample.of_values([0.0, 0.0, 0.0]), S.PerExample.of_values([1.0, 0.0, 1.0])
    pb = S.paired_bootstrap(zeros, ones)
    assert pb.quality_retained == S.Estimate(None, None)
    assert S.paired_bootstrap(zeros, zeros).quality_retained == S.Estimate(1.0, (1.0, 1.0))
    assert S.paired_bootstrap(zeros, ones, baseline=0.0).above_baseline == S.Estimate(None, None)


def test_one_index_matrix_serves_every_figure_of_a_report():
    t, m = _teacher_and_model(n=40)
    pb = S.paired_bootstrap(S.PerExample.of_values(t), S.PerExample.of_values(m), n_resamples=500, seed=3)
    assert pb.indices.shape == (500, 40)
    assert S.bootstrap_ci(S.PerExample.of_values(m), indices=pb.indices) == pb.model.ci
    again = S.paired_bootstrap(S.PerExample.of_values(t), S.PerExample.of_values(m), indices=pb.indices)
    assert again.difference == pb.difference


def test_pairing_requires_the_same_examples():
    a = S.PerExample.of_values([1.0, 2.0], ids=["x", "y"])
    with pytest.raises(ValueError, match="same example ids"):
        S.paired_bootstrap(a, S.PerExample.of_values([1.0, 2.0], ids=["x", "z"]))
    with pytest.raises(ValueError, match="cannot pair"):
        S.paired_bootstrap(a, S.PerExample.of_values([1.0, 2.0, 3.0]))
    other = S.difference_significant(a, S.PerExample.of_values([1.0, 2.0, 3.0], ids=["x", "y", "z"]))
    assert other.method == "unpaired bootstrap"


def test_saved_results_use_per_example_values_else_interval_overlap():
    assert S.intervals_overlap((0.0, 1.0), (1.0, 2.0))
    assert not S.intervals_overlap((0.0, 1.0), (1.5, 2.0))
    t, m = _teacher_and_model()
    ids = list(range(len(t)))
    a = {"value": t.mean(), "ci": [0.0, 1.0], "per_example": S.PerExample.of_values(t, ids).to_dict()}
    b = {"value": m.mean(), "ci": [0.0, 1.0], "per_example": S.PerExample.of_values(m, ids).to_dict()}
    full = S.compare_saved(a, b)
    assert (full.method, full.significant) == ("paired bootstrap", True)
    summary = S.compare_saved({"value": 0.5, "ci": [0.4, 0.6]}, {"value": 0.8, "ci": [0.7, 0.9]})
    assert (summary.method, summary.significant) == ("interval overlap", True)
    assert summary.difference == pytest.approx(0.3)
    overlapping = S.compare_saved({"value": 0.5, "ci": [0.4, 0.6]}, {"value": 0.55, "ci": [0.5, 0.7]})
    assert overlapping.significant is None  # overlap alone decides nothing
