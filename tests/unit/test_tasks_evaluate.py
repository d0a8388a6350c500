"""Task metrics from label logits, with notes for what is undefined."""

import math

import pytest
import torch

from slmkit.tasks.config import TaskConfig
from slmkit.tasks.data import ScoringRow
from slmkit.tasks.evaluate import agreement, contexts_of, evaluate, spearman


def row(group, label, context=None):
    return ScoringRow(context or f"ctx {group}", f"item {group} {label}", label, group)


def test_ranking_metrics_and_single_candidate_note():
    rows = [row("a", 1), row("a", 0), row("b", 0), row("b", 1), row("c", 1)]
    logits = torch.tensor([[3.0], [-1.0], [2.0], [1.0], [0.0]])  # 1-logit head
    metrics, notes = evaluate(logits, rows, TaskConfig(primary_metric="ndcg@10"))
    assert metrics["mrr"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert metrics["groups_single_candidate"] == 1
    assert any("single candidate" in n for n in notes)
    assert metrics["accuracy"] == pytest.approx(4 / 5)  # predicted positive at logits 3, 2, 1, 0; only "b"/0 wrong


def test_classification_uses_label_distribution_and_skips_unlabeled():
    task = TaskConfig(kind="classification", labels=["a", "b", "c"], verbalizers=[" a", " b", " c"])
    rows = [row("x", 0), row("y", 2), ScoringRow("z", "w", None, "z")]
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    metrics, notes = evaluate(logits, rows, task)
    assert metrics["accuracy"] == 0.5
    p0 = math.exp(2) / (math.exp(2) + 2)
    p2 = 1 / (math.exp(3) + 2)
    assert metrics["log_loss"] == pytest.approx(-(math.log(p0) + math.log(p2)) / 2, rel=1e-5)
    assert "ndcg@10" not in metrics and notes == ["1 unlabeled row(s) left out of metrics"]


def test_single_class_auc_is_noted_not_crashed():
    rows = [row("a", 1), row("a", 1)]
    metrics, notes = evaluate(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), rows, TaskConfig())
    assert metrics["auc"] is None and any("AUC undefined" in n for n in notes)


def test_agreement_and_spearman():
    t = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 3.0]])
    s = torch.tensor([[0.5], [-2.0], [4.0]])  # same order, different scale
    out = agreement(s, t)
    assert out["teacher_label_agreement"] == 1.0 and out["teacher_score_spearman"] == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_contexts_of_fills_lists_to_the_candidate_count():
    rows = [row("a", 1, "A"), row("a", 0, "A"), row("b", 1, "B")]
    lists = contexts_of(rows, 4)
    assert [len(x) for x in lists] == [4, 4] and lists[1] == [rows[2]] * 4
