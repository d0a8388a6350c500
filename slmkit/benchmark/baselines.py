"""Chance and trivial baselines of quality figures, as exact expectations: pure functions, no models.

A figure means little without the value a model with no skill gets: a student that retains 90%
of the teacher's NDCG has retained little if a random order already scores 85% of it.
``above_baseline`` measures progress over that floor instead:
(model - baseline) / (teacher - baseline).

Ranking and classification baselines follow ``slmkit.tasks.metrics`` exactly (same skipped
groups, same gain, same clipping and bins), so a baseline and a model's figure are comparable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence

import numpy as np

from slmkit.benchmark.quality import contains, exact_match, rouge_l
from slmkit.tasks.metrics import group_indices

# ---------------------------------------------------------------- ranking: a uniformly random order


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k, the discount of ``slmkit.tasks.metrics.dcg``."""
    return 1.0 / np.log2(np.arange(2, k + 2))


def expected_ndcg_at_k(n: int, r: int, k: int) -> float | None:
    """E[NDCG@k] of one group of ``n`` candidates, ``r`` of them relevant (binary), randomly ordered.

    Each rank holds a relevant item with probability r / n, so E[DCG@k] = (r / n) * sum of the
    discounts of ranks 1..min(k, n); the ideal DCG is the same for every order. None when r == 0
    (``ndcg_at_k`` skips such groups: its ideal DCG is 0).
    """
    if not 0 <= r <= n or n < 1 or k < 1:
        raise ValueError(f"need 0 <= r <= n, n >= 1 and k >= 1, got n={n}, r={r}, k={k}")
    if r == 0:
        return None
    ideal = _discounts(min(k, r)).sum()
    return float((r / n) * _discounts(min(k, n)).sum() / ideal)


def expected_reciprocal_rank(n: int, r: int) -> float | None:
    """E[1 / rank of the first relevant item] of a random order; None when r == 0.

    The first relevant item is at rank p when the r relevant items fill p and r - 1 of the n - p
    ranks below it: P(p) = C(n - p, r - 1) / C(n, r), for p = 1 .. n - r + 1.
    """
    if not 0 <= r <= n or n < 1:
        raise ValueError(f"need 0 <= r <= n and n >= 1, got n={n}, r={r}")
    if r == 0:
        return None
    total = math.comb(n, r)
    return float(sum(math.comb(n - p, r - 1) / total / p for p in range(1, n - r + 2)))


def random_ranking_baseline(relevance: Sequence[int], groups: Sequence[Hashable], k: int = 10) -> dict:
    """Expected ``ranking_metrics`` of a random scorer: mean NDCG@k and MRR over the same groups.

    Groups are skipped exactly as ``slmkit.tasks.metrics.ranking_metrics`` skips them (one
    candidate; no relevant candidate), so the set of groups does not depend on the order and the
    expected mean over groups is the mean of the per-group expectations.
    """
    rel = np.asarray(relevance)
    if not np.isin(rel, (0, 1)).all():
        raise ValueError("the random-order baseline is exact for binary (0/1) relevance only")
    ndcgs, rrs, single, no_relevant = [], [], 0, 0
    for rows in group_indices(groups).values():
        n, r = len(rows), int(rel[rows].sum())
        if n < 2:
            single += 1
        elif r == 0:
            no_relevant += 1
        else:
            ndcgs.append(expected_ndcg_at_k(n, r, k))
            rrs.append(expected_reciprocal_rank(n, r))
    return {
        f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else None,
        "mrr": float(np.mean(rrs)) if rrs else None,
        "groups_evaluated": len(ndcgs),
        "groups_single_candidate": single,
        "groups_without_relevant": no_relevant,
    }


def random_auc(y: Sequence[int]) -> float | None:
    """AUC of a random scorer: 0.5 by symmetry; None when one class is missing, as ``metrics.auc``."""
    y = np.asarray(y).astype(bool)
    return 0.5 if y.any() and not y.all() else None


# ---------------------------------------------------------------- classification: constant predictors


def label_frequencies(y: Sequence[int], n_labels: int | None = None) -> np.ndarray:
    """[K] share of each label index in ``y`` (K = n_labels, or max label + 1)."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0 or (y < 0).any():
        raise ValueError("need at least one label, all non-negative indices")
    return np.bincount(y, minlength=n_labels or 0) / len(y)


def majority_accuracy(y: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent label of ``y``."""
    return float(label_frequencies(y).max())


def base_rate_log_loss(y: Sequence[int], prior: Sequence[float] | None = None, eps: float = 1e-7) -> float:
    """Log loss (nats) of predicting ``prior`` for every row, clipped like ``metrics.log_loss``.

    With the default prior (the label frequencies of ``y`` itself) this is the entropy of the label
    distribution: the best any constant predictor can do on this data. Pass the train frequencies
    for an honest, not fitted-on-eval, baseline.
    """
    y = np.asarray(y, dtype=np.int64)
    p = label_frequencies(y) if prior is None else np.asarray(prior, dtype=np.float64)
    counts = np.bincount(y, minlength=len(p))
    if len(counts) > len(p):
        raise ValueError(f"label {len(counts) - 1} is outside the prior's {len(p)} labels")
    present = counts > 0
    return float(-(counts[present] * np.log(np.clip(p[present], eps, 1.0))).sum() / len(y))


def base_rate_ece(y: Sequence[int], prior: Sequence[float] | None = None) -> float:
    """ECE of predicting ``prior`` for every row, as ``metrics.expected_calibration_error`` bins it.

    A constant predictor puts every row in one confidence bin, so its ECE is |accuracy - confidence|
    with confidence max(prior) and the prediction its argmax (first on ties, as numpy's argmax).
    With the default prior (the frequencies of ``y``) that is 0: the base rate is calibrated on
    its own data, which is why a model's ECE needs this floor beside it.
    """
    y = np.asarray(y, dtype=np.int64)
    p = label_frequencies(y) if prior is None else np.asarray(prior, dtype=np.float64)
    return float(abs((y == int(p.argmax())).mean() - p.max()))


# ---------------------------------------------------------------- generation: trivial answers, unigram LM

_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


def first_sentence(text: str) -> str:
    """The first sentence of a user's question (up to .!? followed by a space, or a line break)."""
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()


def answer_scores(answers: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example exact_match / contains / rouge_l of given answers (trivial or not) against references.

    For the first-sentence baseline pass ``[first_sentence(q) for q in questions]``; for a constant
    answer, ``[text] * len(references)``. The arrays feed ``stats.PerExample.of_values``.
    """
    if len(answers) != len(references):
        raise ValueError(f"{len(answers)} answers for {len(references)} references")
    fns = {"exact_match": exact_match, "contains": contains, "rouge_l": rouge_l}
    return {name: np.array([fn(a, r) for a, r in zip(answers, references)], dtype=np.float64)
            for name, fn in fns.items()}


def unigram_log_probs(train_ids: Sequence[int], vocab_size: int) -> np.ndarray:
    """[V] natural-log probabilities of a unigram model fitted on train token ids, add-one smoothed.

    p(t) = (count(t) + 1) / (N_train + V): every vocabulary entry keeps some mass, so unseen eval
    tokens have a finite loss.
    """
    ids = _token_array(train_ids, vocab_size)
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    return np.log(counts + 1) - math.log(len(ids) + vocab_size)


def unigram_nll(
    train_ids: Sequence[int], eval_seqs: Sequence[Sequence[int]], vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sequence summed NLL and token count of the eval targets under the train-fitted unigram.

    The pair is the (num, den) of a per-example perplexity (``stats.PerExample``, figure "perplexity").
    """
    logp = unigram_log_probs(train_ids, vocab_size)
    nll = np.array([-logp[_token_array(s, vocab_size)].sum() for s in eval_seqs], dtype=np.float64)
    counts = np.array([len(s) for s in eval_seqs], dtype=np.float64)
    return nll, counts


def unigram_perplexity(train_ids: Sequence[int], eval_ids: Sequence[int], vocab_size: int) -> float:
    """Perplexity on eval token ids of the add-one unigram model fitted on train token ids."""
    eval_arr = _token_array(eval_ids, vocab_size)
    if len(eval_arr) == 0:
        raise ValueError("no eval tokens: perplexity is undefined")
    return math.exp(-unigram_log_probs(train_ids, vocab_size)[eval_arr].mean())


def _token_array(ids: Sequence[int], vocab_size: int) -> np.ndarray:
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(arr) and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return arr


# ---------------------------------------------------------------- progress over the floor


def above_baseline(model: float | None, teacher: float | None, baseline: float | None) -> float | None:
    """(model - baseline) / (teacher - baseline): 1 = as good as the teacher, 0 = no better than chance.

    Works unchanged for lower-is-better figures, since (baseline - model) / (baseline - teacher) is
    the same number. None when any input is missing or the teacher equals the baseline (no scale).
    """
    if model is None or teacher is None or baseline is None or teacher == baseline:
        return None
    return float((model - baseline) / (teacher - baseline))
