"""Intervals and chance baselines of task figures: a paired bootstrap over groups, numpy only.

A ranking figure belongs to a query's whole candidate list, so a resample draws whole groups
with replacement (a group drawn twice counts twice); a classification figure is resampled over
rows. One index matrix serves the teacher, every model and the baseline (paired: the queries
that are hard for one are hard for all, and that variance cancels in their ratios).

NDCG@k and MRR are per-group values averaged over the drawn groups (a group where they are
undefined counts for nothing, as ``metrics.ranking_metrics`` skips it); AUC, accuracy, log loss,
ECE and teacher agreement are recomputed on each resample's rows with ``slmkit.tasks.metrics``.
Every sample array holds the figure on all the data at position 0 and on resample r at r + 1.

Chance baselines are exact expectations (``slmkit.benchmark.baselines``): a random order for
NDCG@k / MRR (from each group's size and relevant count), 0.5 for AUC, the eval set's majority
label for accuracy, the label base rate (``prior``: train frequencies when given) for log loss
and ECE, each evaluated on the same resamples.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from slmkit.benchmark import baselines as B
from slmkit.benchmark.stats import (
    PerExample,
    above_baseline_rows,
    percentile_ci,
    resample_indices,
    retained_rows,
)
from slmkit.tasks import metrics as M

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
AGREEMENT = ("teacher_label_agreement", "teacher_score_spearman")


@dataclass(frozen=True)
class Units:
    """What a resample draws: each unit's row indices (a group's candidates, or one row) and its id."""

    rows: tuple[np.ndarray, ...]
    ids: tuple[Hashable, ...]
    grouped: bool  # ranking: units are groups; classification: units are rows

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of(cls, groups: Sequence[Hashable] | None, n_rows: int) -> Units:
        """Whole groups when ``groups`` is given (ranking), else one unit per row."""
        if groups is None:
            return cls(tuple(np.array([i]) for i in range(n_rows)), tuple(range(n_rows)), False)
        found = M.group_indices(groups)
        return cls(tuple(np.array(v) for v in found.values()), tuple(found), True)


def draws(units: Units, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[1 + R, n_units] unit indices: the identity (all the data) first, then R seeded resamples."""
    n = len(units)
    return np.vstack([np.arange(n)[None, :], resample_indices(n, n_resamples, seed)])


def _resampled_rows(units: Units, draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, group label per row) of one resample; a unit drawn twice is two groups."""
    parts = [units.rows[j] for j in draw]
    labels = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    return np.concatenate(parts), labels


def _ratio_samples(pe: PerExample, idx: np.ndarray) -> np.ndarray:
    num, den = pe.num[idx].sum(axis=1), pe.den[idx].sum(axis=1)
    out = np.full(len(idx), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---------------------------------------------------------------- per-unit values


def group_ranking_values(p_pos: np.ndarray, y: np.ndarray, units: Units, k: int) -> dict[str, PerExample]:
    """Per group NDCG@k and MRR (den 0 where ``ranking_metrics`` skips the group)."""
    ndcg, rr, den = [], [], []
    for rows in units.rows:
        value = M.ndcg_at_k(p_pos[rows], y[rows], k) if len(rows) > 1 else None
        ndcg.append(value or 0.0)
        rr.append(M.reciprocal_rank(p_pos[rows], y[rows]) if value is not None else 0.0)
        den.append(0.0 if value is None else 1.0)
    return {f"ndcg@{k}": PerExample(np.array(ndcg), np.array(den), units.ids),
            "mrr": PerExample(np.array(rr), np.array(den), units.ids)}


def unit_means(probs: np.ndarray, y: np.ndarray, units: Units, eps: float = 1e-7) -> dict[str, PerExample]:
    """Accuracy and log loss as per-unit sums over rows (num) and row counts (den), for ``compare``."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs[:, 1] >= 0.5).astype(np.int64) if probs.shape[1] == 2 else probs.argmax(1)
    nll = -np.log(np.clip(probs[np.arange(len(y)), y], eps, 1.0))
    count = np.array([len(r) for r in units.rows], dtype=np.float64)
    return {"accuracy": PerExample(np.array([(pred[r] == y[r]).sum() for r in units.rows], dtype=np.float64),
                                   count, units.ids),
            "log_loss": PerExample(np.array([nll[r].sum() for r in units.rows]), count, units.ids)}


def unit_values(probs: np.ndarray, y: np.ndarray, units: Units, k: int = 10) -> dict[str, PerExample]:
    """The figures that are means over units, per unit: accuracy and log loss, and NDCG@k / MRR by group."""
    out = unit_means(probs, y, units)
    if units.grouped and np.asarray(probs).shape[1] == 2:
        out.update(group_ranking_values(np.asarray(probs, dtype=np.float64)[:, 1], np.asarray(y), units, k))
    return out


# ---------------------------------------------------------------- figures on every resample


def _row_figures(probs: np.ndarray, y: np.ndarray, teacher: np.ndarray | None) -> dict[str, float | None]:
    out = M.binary_metrics(probs[:, 1], y) if probs.shape[1] == 2 else M.multiclass_metrics(probs, y)
    if teacher is not None:
        out["teacher_label_agreement"] = float((probs.argmax(1) == teacher.argmax(1)).mean())
        if probs.shape[1] == 2:
            out["teacher_score_spearman"] = M.spearman(probs[:, 1], teacher[:, 1])
    return out


def figure_samples(probs: np.ndarray, y: np.ndarray, units: Units, idx: np.ndarray, k: int = 10,
                   teacher: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every task figure of one scorer on each row of ``idx`` ([1 + R] floats, NaN where undefined).

    ``probs`` [N, K] label distributions, ``y`` [N] label indices; ``teacher`` the teacher's
    distributions on the same rows (for the agreement figures).
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    binary = probs.shape[1] == 2
    names = ["auc", "accuracy", "log_loss", "ece"] if binary else ["accuracy", "log_loss", "ece"]
    if teacher is not None:
        names += list(AGREEMENT) if binary else ["teacher_label_agreement"]
    out = {f: np.full(len(idx), np.nan) for f in names}
    for r, draw in enumerate(idx):
        rows, _ = _resampled_rows(units, draw)
        values = _row_figures(probs[rows], y[rows], None if teacher is None else teacher[rows])
        for f in names:
            out[f][r] = np.nan if values.get(f) is None else values[f]
    if units.grouped and binary:
        for f, pe in group_ranking_values(probs[:, 1], y, units, k).items():
            out[f] = _ratio_samples(pe, idx)
    return out


def baseline_samples(y: np.ndarray, units: Units, idx: np.ndarray, k: int = 10,
                     prior: Sequence[float] | None = None, n_labels: int = 2) -> dict[str, tuple[np.ndarray, str]]:
    """(samples, what scores it) of each figure's chance or trivial baseline on the same resamples."""
    y = np.asarray(y, dtype=np.int64)
    own = B.label_frequencies(y, n_labels)
    p = own if prior is None else np.asarray(prior, dtype=np.float64)
    whose = "the eval labels" if prior is None else "the training labels"
    majority = int(own.argmax())
    out = {"accuracy": (np.full(len(idx), np.nan), f"always the most frequent eval label ({majority})"),
           "log_loss": (np.full(len(idx), np.nan), f"every row given the label frequencies of {whose}"),
           "ece": (np.full(len(idx), np.nan), f"every row given the label frequencies of {whose}")}
    if n_labels == 2:
        out["auc"] = (np.full(len(idx), np.nan), "a random score (AUC 0.5)")
    for r, draw in enumerate(idx):
        rows, _ = _resampled_rows(units, draw)
        yr = y[rows]
        out["accuracy"][0][r] = (yr == majority).mean()
        out["log_loss"][0][r] = B.base_rate_log_loss(yr, p)
        out["ece"][0][r] = B.base_rate_ece(yr, p)
        if n_labels == 2:
            out["auc"][0][r] = np.nan if B.random_auc(yr) is None else 0.5
    if units.grouped and n_labels == 2:
        for f, pe in random_order_values(y, units, k).items():
            out[f] = (_ratio_samples(pe, idx), "a random order of each query's candidates (exact expectation)")
    return out


def random_order_values(y: np.ndarray, units: Units, k: int) -> dict[str, PerExample]:
    """Per group expected NDCG@k and MRR of a random order (den 0 where the metric skips the group)."""
    ndcg, rr, den = [], [], []
    for rows in units.rows:
        n, r = len(rows), int(y[rows].sum())
        ok = n > 1 and r > 0
        ndcg.append(B.expected_ndcg_at_k(n, r, k) if ok else 0.0)
        rr.append(B.expected_reciprocal_rank(n, r) if ok else 0.0)
        den.append(1.0 if ok else 0.0)
    return {f"ndcg@{k}": PerExample(np.array(ndcg), np.array(den), units.ids),
            "mrr": PerExample(np.array(rr), np.array(den), units.ids)}


# ---------------------------------------------------------------- paired derived figures


@dataclass(frozen=True)
class Paired:
    """Point and 95% interval of a model figure, its plain ratio and its above-baseline ratio."""

    ci: tuple[float, float] | None
    retained_ci: tuple[float, float] | None
    above: float | None
    above_ci: tuple[float, float] | None


def _point(samples: np.ndarray) -> float | None:
    return float(samples[0]) if np.isfinite(samples[0]) else None


def paired(model: np.ndarray, teacher: np.ndarray, higher_is_better: bool, baseline: np.ndarray | None = None,
           level: float = LEVEL) -> Paired:
    """Intervals from one figure's samples (position 0 = all the data) of a model, the teacher, a baseline.

    No interval without a point: a figure undefined on all the data has none, whatever its resamples say.
    """
    ci = percentile_ci(model[1:], level) if _point(model) is not None else None
    ratio = retained_rows(model, teacher, higher_is_better)
    above = above_ci = None
    if baseline is not None:
        rows = above_baseline_rows(model, teacher, baseline)
        above = _point(rows)
        above_ci = percentile_ci(rows[1:], level) if above is not None else None
    return Paired(ci, percentile_ci(ratio[1:], level) if _point(ratio) is not None else None, above, above_ci)
