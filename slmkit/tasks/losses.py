"""Score distillation losses: pure tensor functions on label logits, no models.

Every scorer yields label logits [B, K]. A single-logit head (K = 1) is the binary logit z, and
is read as the two-label logits [0, z] because sigmoid(z) = softmax([0, z])[1]; that is how an
encoder with one output learns from an LLM teacher that answers " No" / " Yes".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_label_logits(logits: torch.Tensor) -> torch.Tensor:
    """[B, 1] binary logits -> [B, 2] label logits [0, z]; [B, K>=2] unchanged."""
    if logits.shape[-1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=-1)
    return logits


def positive_margin(logits: torch.Tensor) -> torch.Tensor:
    """Binary score in logit space, [B]: z for one logit, logit_pos - logit_neg for two."""
    logits = as_label_logits(logits)
    if logits.shape[-1] != 2:
        raise ValueError(f"a binary score needs 1 or 2 label logits, got {logits.shape[-1]}")
    return logits[:, 1] - logits[:, 0]


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over rows of KL(p_teacher || p_student) at temperature T, scaled by T^2 (Hinton et al.)."""
    s = F.log_softmax(as_label_logits(student).float() / temperature, dim=-1)
    t = F.log_softmax(as_label_logits(teacher).float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2


def bce_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of the student's positive probability against the teacher's, T^2-scaled.

    Same gradient as ``kl_loss`` for two labels; its value is offset by the teacher's entropy
    (so it is not 0 at a perfect match), which is the usual pointwise ranking-KD form.
    """
    target = torch.sigmoid(positive_margin(teacher).float() / temperature)
    return F.binary_cross_entropy_with_logits(positive_margin(student).float() / temperature, target) * temperature**2


def listwise_kl_loss(
    student: torch.Tensor, teacher: torch.Tensor, groups: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL between teacher and student softmaxes over each group's candidates, averaged over groups.

    Ranking cares about the order within a context's list, not absolute probabilities: this
    matches the distribution of attention over candidates. Groups with one row carry no signal
    and are skipped; a batch with none gives 0.
    """
    s_all = positive_margin(student).float() / temperature
    t_all = positive_margin(teacher).float() / temperature
    losses = []
    for g in torch.unique(groups):
        rows = groups == g
        if rows.sum() < 2:
            continue
        s, t = F.log_softmax(s_all[rows], dim=0), F.log_softmax(t_all[rows], dim=0)
        losses.append((t.exp() * (t - s)).sum())
    if not losses:
        return s_all.sum() * 0.0  # keeps the graph so backward() still works
    return torch.stack(losses).mean() * temperature**2


def hard_label_loss(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against label indices [B]; a single-logit head uses BCE with the 0/1 label."""
    if student.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(student[:, 0].float(), labels.float())
    return F.cross_entropy(student.float(), labels.long())


def listwise_label_loss(student: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each group's softmax over positive scores against its relevant candidates.

    The target spreads evenly over a group's relevant rows (label 1), so one relevant candidate
    gives -log softmax(s)[relevant]: the ranking counterpart of the pointwise hard-label loss.
    Groups with a single row or without a relevant row carry no signal and are skipped.
    """
    scores = positive_margin(student).float()
    losses = []
    for g in torch.unique(groups):
        rows = groups == g
        relevant = (labels[rows] == 1).float()
        if rows.sum() < 2 or relevant.sum() == 0:
            continue
        losses.append(-(F.log_softmax(scores[rows], dim=0) * relevant).sum() / relevant.sum())
    if not losses:
        return scores.sum() * 0.0
    return torch.stack(losses).mean()


LABEL_LOSSES = ("pointwise", "listwise")


def label_loss(student: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None,
               kind: str = "pointwise") -> torch.Tensor:
    """The supervised loss of a fine-tuned scorer on labelled rows (label -1: unlabelled, skipped).

    pointwise: cross-entropy of every row's label (BCE for a single logit); listwise: see
    :func:`listwise_label_loss`.
    """
    known = labels >= 0
    if kind == "pointwise":
        return hard_label_loss(student[known], labels[known])
    if kind == "listwise":
        if groups is None:
            raise ValueError("the listwise label loss needs the group id of every row")
        return listwise_label_loss(student[known], labels[known], groups[known])
    raise ValueError(f"unknown label loss {kind!r}; expected one of {list(LABEL_LOSSES)}")


KD_LOSSES = {"kl": kl_loss, "bce": bce_loss}


def score_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    kind: str,
    temperature: float,
    hard_label_weight: float = 0.0,
    labels: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1 - w) * KD + w * hard-label loss; rows with label -1 (unlabeled) skip the hard term."""
    if kind == "listwise_kl":
        if groups is None:
            raise ValueError("listwise_kl needs the group id of every row")
        kd = listwise_kl_loss(student, teacher, groups, temperature)
    elif kind in KD_LOSSES:
        kd = KD_LOSSES[kind](student, teacher, temperature)
    else:
        raise ValueError(f"unknown score KD loss {kind!r}; expected one of {sorted(KD_LOSSES) + ['listwise_kl']}")
    if hard_label_weight == 0 or labels is None:
        return kd
    known = labels >= 0
    if not known.any():
        return kd
    hard = hard_label_loss(student[known], labels[known])
    return (1 - hard_label_weight) * kd + hard_label_weight * hard
