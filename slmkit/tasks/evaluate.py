"""Quality and speed of a scorer on task rows: the benchmark stage's predictive side.

``evaluate`` turns label logits into the task's metrics (and notes for what could not be
computed); ``scoring_speed`` measures items/s at fixed batch sizes and per-context latency with
20 candidates per context, for any backend that maps rows to label logits (PyTorch scorer,
prefix-shared scorer, ONNX Runtime session).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from slmkit.tasks import metrics as M
from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.losses import as_label_logits
from slmkit.tasks.metrics import spearman
from slmkit.tasks.prefix import score_rows_shared
from slmkit.tasks.scorers import CausalLMScorer, score_rows

ScoreFn = Callable[[Sequence[ScoringRow]], torch.Tensor]


def label_probs(logits: torch.Tensor) -> np.ndarray:
    """[N, K] label distribution (a single logit is read as two labels)."""
    return as_label_logits(logits.float()).softmax(-1).numpy()


def ndcg_k(task: TaskConfig) -> int:
    """k of NDCG: from ``primary_metric`` when it is ndcg@k, else 10."""
    return int(task.primary_metric[5:]) if task.primary_metric.startswith("ndcg@") else 10


def evaluate(logits: torch.Tensor, rows: Sequence[ScoringRow], task: TaskConfig) -> tuple[dict, list[str]]:
    """(metrics, notes) of label logits against the rows' labels; unlabeled rows are left out."""
    keep = [i for i, r in enumerate(rows) if r.label is not None]
    notes = [] if len(keep) == len(rows) else [f"{len(rows) - len(keep)} unlabeled row(s) left out of metrics"]
    if not keep:
        return {}, notes + ["no labeled rows: no quality metrics"]
    probs, y = label_probs(logits[keep]), np.array([rows[i].label for i in keep])
    if probs.shape[1] == 2:
        out = M.binary_metrics(probs[:, 1], y)
        if out["auc"] is None:
            notes.append("AUC undefined: the labels hold a single class")
    else:
        out = M.multiclass_metrics(probs, y)
    if task.kind == "ranking":
        ranking = M.ranking_metrics(probs[:, 1], y, [rows[i].group for i in keep], k=ndcg_k(task))
        out.update(ranking)
        if ranking["groups_single_candidate"]:
            notes.append(f"{ranking['groups_single_candidate']} group(s) with a single candidate: "
                         "NDCG/MRR undefined there, left out")
        if ranking["groups_without_relevant"]:
            notes.append(f"{ranking['groups_without_relevant']} group(s) without a relevant candidate: left out")
    return out, notes


def default_score_fn(scorer, batch_size: int = 32) -> ScoreFn:
    """Prefix-shared scoring for causal-LM scorers, batched forward passes for classifiers."""
    if isinstance(scorer, CausalLMScorer):
        return lambda rows: score_rows_shared(scorer, rows, batch_size=batch_size)
    return lambda rows: score_rows(scorer, rows, batch_size=batch_size)


def evaluate_scorer(scorer, rows: Sequence[ScoringRow], task: TaskConfig) -> tuple[dict, list[str], torch.Tensor]:
    """Score ``rows`` and compute metrics; also returns the logits (teacher agreement needs them)."""
    logits = default_score_fn(scorer)(rows)
    metrics, notes = evaluate(logits, rows, task)
    return metrics, notes, logits


def agreement(student: torch.Tensor, teacher: torch.Tensor) -> dict:
    """How closely a student's scores track the teacher's, label-wise."""
    ps, pt = label_probs(student), label_probs(teacher)
    out = {"teacher_label_agreement": float((ps.argmax(1) == pt.argmax(1)).mean()),
           "teacher_max_abs_prob_diff": float(np.abs(ps - pt).max())}
    if ps.shape[1] == 2:
        out["teacher_score_spearman"] = spearman(ps[:, 1], pt[:, 1])
    return out


def contexts_of(rows: Sequence[ScoringRow], candidates: int) -> list[list[ScoringRow]]:
    """Candidate lists of exactly ``candidates`` rows per context (items repeated when a group is short)."""
    lists = []
    for idx in M.group_indices([r.context for r in rows]).values():
        group = [rows[i] for i in idx]
        lists.append([group[i % len(group)] for i in range(candidates)])
    return lists


def timed(fn: ScoreFn, rows: Sequence[ScoringRow]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn(rows)
    return time.perf_counter() - start


def scoring_speed(
    fn: ScoreFn, rows: Sequence[ScoringRow], *, batch_sizes: Sequence[int] = (1, 16, 64), candidates: int = 20,
    max_contexts: int = 8, min_items: int = 64,
) -> dict:
    """Items/s at each batch size (rows scored as independent batches) and per-context latency.

    Per context, ``candidates`` items go through ``fn`` in one call: the serving pattern of
    ranking one member's job list. p99 over few contexts is their max, reported as such.
    """
    out: dict = {}
    fn(rows[:1])  # warm-up: first-call allocation and kernel choice are not throughput
    for bs in batch_sizes:
        n = max(min_items, bs)
        sample = [rows[i % len(rows)] for i in range(n)]
        seconds = sum(timed(fn, sample[i : i + bs]) for i in range(0, n, bs))
        out[f"items_per_s@bs{bs}"] = round(n / seconds, 2)
    lat = [timed(fn, ctx) for ctx in contexts_of(rows, candidates)[:max_contexts]]
    out[f"items_per_s@{candidates}_per_context"] = round(candidates * len(lat) / sum(lat), 2)
    out["context_latency_p50_ms"] = round(float(np.percentile(lat, 50)) * 1000, 1)
    out["context_latency_p99_ms"] = round(float(np.percentile(lat, 99)) * 1000, 1)
    out["contexts_timed"] = len(lat)
    return out
