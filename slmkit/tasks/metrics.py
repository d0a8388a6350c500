"""Pure metrics of predictive tasks on numpy arrays: no models, no files.

Binary metrics take ``p`` (probability of the positive label) and ``y`` (0/1). Ranking metrics
take per-row ``scores``, relevance ``y`` and ``groups`` (one id per row); groups where a metric
is undefined (a single candidate, no relevant candidate) are counted and skipped, never fatal
(groups with a single candidate are reported, not crashed on).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

LOWER_IS_BETTER = {"log_loss", "ece"}


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (what Mann-Whitney needs).

    Vectorised over runs of equal values: the bootstrap recomputes AUC thousands of times.
    """
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    first = np.ones(len(x), dtype=bool)
    first[1:] = sorted_x[1:] != sorted_x[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(x)) - 1  # last position of each run of ties
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends) / 2 + 1)[np.cumsum(first) - 1]
    return ranks


def auc(scores: Sequence[float], y: Sequence[int]) -> float | None:
    """ROC AUC: probability a random positive outscores a random negative (ties count half).

    None when only one class is present: AUC is undefined there, and 0.5 would be a lie.
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = _ranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(pred: Sequence, y: Sequence) -> float:
    """Fraction of rows whose predicted label equals the true label."""
    pred, y = np.asarray(pred), np.asarray(y)
    return float((pred == y).mean())


def log_loss(probs: np.ndarray, y: Sequence[int], eps: float = 1e-7) -> float:
    """Mean negative log-likelihood of the true label.

    ``probs`` is [N] (positive probability, binary) or [N, K] (label distribution, y = index).
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], axis=1)
    picked = np.clip(probs[np.arange(len(y)), y], eps, 1.0)
    return float(-np.log(picked).mean())


def expected_calibration_error(probs: np.ndarray, y: Sequence[int], n_bins: int = 10) -> float:
    """ECE: |accuracy - confidence| per equal-width confidence bin, weighted by the bin's share.

    Binary [N] input is read as the two-label distribution, so confidence is max(p, 1-p), the
    same definition as for K labels (Guo et al. 2017).
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], axis=1)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = (pred == y).astype(np.float64)
    # bin i holds conf in (i/n, (i+1)/n]; conf == 0 cannot happen for a distribution's max
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    # per bin: share * |mean correct - mean conf| = |sum correct - sum conf| / N
    gap = np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.abs(gap).sum() / len(y))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Rank correlation (average ranks for ties); None when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = np.sqrt((ra @ ra) * (rb @ rb))
    return None if norm == 0 else float(ra @ rb / norm)


def dcg(relevance_in_rank_order: np.ndarray, k: int) -> float:
    """Discounted cumulative gain with the (2^rel - 1) / log2(rank + 1) gain."""
    rel = np.asarray(relevance_in_rank_order, dtype=np.float64)[:k]
    return float(((2.0**rel - 1) / np.log2(np.arange(2, len(rel) + 2))).sum())


def ndcg_at_k(scores: np.ndarray, relevance: np.ndarray, k: int) -> float | None:
    """NDCG@k of one group; None when it has no relevant candidate (ideal DCG is 0).

    Ties are broken by input order (stable sort), so equal scores get no free credit.
    """
    scores, relevance = np.asarray(scores, dtype=np.float64), np.asarray(relevance, dtype=np.float64)
    ideal = dcg(np.sort(relevance)[::-1], k)
    if ideal == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    return dcg(relevance[order], k) / ideal


def reciprocal_rank(scores: np.ndarray, relevance: np.ndarray) -> float | None:
    """1 / rank of the best-ranked relevant candidate of one group; None when none is relevant."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.nonzero(np.asarray(relevance)[order] > 0)[0]
    return None if len(hits) == 0 else 1.0 / (hits[0] + 1)


def group_indices(groups: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Row indices of each group, in first-seen order."""
    out: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        out[g].append(i)
    return dict(out)


def ranking_metrics(scores, relevance, groups, k: int = 10) -> dict:
    """Mean NDCG@k and MRR over groups, plus counts of groups where they are undefined."""
    scores, relevance = np.asarray(scores, dtype=np.float64), np.asarray(relevance)
    ndcgs, rrs, single, no_relevant = [], [], 0, 0
    for rows in group_indices(groups).values():
        if len(rows) < 2:
            single += 1  # a one-candidate list has nothing to rank
            continue
        n = ndcg_at_k(scores[rows], relevance[rows], k)
        if n is None:
            no_relevant += 1
            continue
        ndcgs.append(n)
        rrs.append(reciprocal_rank(scores[rows], relevance[rows]))
    return {
        f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else None,
        "mrr": float(np.mean(rrs)) if rrs else None,
        "groups_evaluated": len(ndcgs),
        "groups_single_candidate": single,
        "groups_without_relevant": no_relevant,
    }


def binary_metrics(p_pos: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict:
    """AUC, accuracy at ``threshold``, log loss and ECE of binary predictions."""
    p_pos, y = np.asarray(p_pos, dtype=np.float64), np.asarray(y, dtype=np.int64)
    return {
        "auc": auc(p_pos, y),
        "accuracy": accuracy((p_pos >= threshold).astype(np.int64), y),
        "log_loss": log_loss(p_pos, y),
        "ece": expected_calibration_error(p_pos, y),
    }


def multiclass_metrics(probs: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, log loss and ECE of [N, K] label distributions (y = label index)."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    return {
        "accuracy": accuracy(probs.argmax(axis=1), y),
        "log_loss": log_loss(probs, y),
        "ece": expected_calibration_error(probs, y),
    }


def retained(student: float | None, teacher: float | None, metric: str) -> float | None:
    """Student quality as a fraction of the teacher's (``quality_retained``); lower-is-better inverted."""
    if student is None or teacher is None:
        return None
    if metric in LOWER_IS_BETTER:
        return float(teacher / student) if student > 0 else None
    return float(student / teacher) if teacher > 0 else None
