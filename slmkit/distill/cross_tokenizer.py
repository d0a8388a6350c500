"""Cross-tokenizer distillation losses: pure tensor functions, no models, no files.

Two modes compare a teacher and a student whose vocabularies differ, at positions aligned by
``slmkit.distill.alignment``:

- ``uld``: Universal Logit Distillation (Boizard et al. 2024, arXiv 2402.12030). The two
  probability vectors are sorted, the shorter one padded with zeros, and the loss is the sum of
  absolute differences: the closed form of the Wasserstein-1 distance between the two
  distributions when the cost of moving mass does not depend on which tokens it moves between.
  It needs no token correspondence at all, and it is zero exactly when the two distributions
  are a permutation of each other, which is also why it says little about *which* token to
  predict.
- ``align``: at one-to-one positions (both models predict the same string), the divergence
  (``loss.kind``, forward KL by default) over the tokens both vocabularies hold as strings,
  plus one bucket for each side's mass on the rest (as the top-k cache does for its tail);
  ULD at the other aligned positions. With identical tokenizers every token is shared, the rest
  bucket is empty and the loss is exactly the same-vocabulary divergence.

:class:`CrossTeacher` plugs into ``slmkit.distill.losses.chunked_head_loss`` in place of the
teacher's logits: one chunk of rows of both lm_heads at a time, so neither model's
full-vocabulary logits exist for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from slmkit.distill.losses import LossSpec, _f32

NONE, ULD, EXACT = 0, 1, 2  # what each student row is compared with: nothing, ULD, shared-vocabulary divergence


def uld_distance(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    """Per row: sum_i |sorted(p_s)_i - sorted(p_t)_i|, the shorter vocabulary padded with zeros."""
    p = s_logp.exp().sort(-1, descending=True).values
    q = t_logp.exp().sort(-1, descending=True).values
    width = max(p.shape[-1], q.shape[-1])
    p, q = F.pad(p, (0, width - p.shape[-1])), F.pad(q, (0, width - q.shape[-1]))
    return (p - q).abs().sum(-1)


def shared_buckets(logp: torch.Tensor, ids: torch.Tensor, rest: torch.Tensor | None) -> torch.Tensor:
    """[N, V] log-probs -> [N, k (+1)]: the shared tokens in the given order, then the mass on the rest.

    ``rest``: the ids outside the shared set (None when there are none: no rest bucket).
    """
    shared = logp.index_select(-1, ids)
    if rest is None:
        return shared
    return torch.cat([shared, torch.logsumexp(logp.index_select(-1, rest), -1, keepdim=True)], -1)


def complement(ids: torch.Tensor, vocab: int) -> torch.Tensor | None:
    keep = torch.ones(vocab, dtype=torch.bool, device=ids.device)
    keep[ids] = False
    rest = keep.nonzero().squeeze(-1)
    return rest if rest.numel() else None


@dataclass
class SharedVocab:
    """The strings both vocabularies hold: teacher ids and the student ids at the same positions."""

    teacher: torch.Tensor  # [k]
    student: torch.Tensor  # [k]
    teacher_rest: torch.Tensor | None
    student_rest: torch.Tensor | None

    def buckets(self, t_logp: torch.Tensor, s_logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both distributions on the shared tokens plus a rest bucket each.

        When one vocabulary lies wholly inside the other, that side has no rest to put mass
        on; both are then compared conditioned on the shared tokens (renormalised over them).
        """
        if (self.teacher_rest is None) == (self.student_rest is None):
            return (shared_buckets(t_logp, self.teacher, self.teacher_rest),
                    shared_buckets(s_logp, self.student, self.student_rest))
        t_b, s_b = t_logp.index_select(-1, self.teacher), s_logp.index_select(-1, self.student)
        return t_b.log_softmax(-1), s_b.log_softmax(-1)

    @classmethod
    def build(cls, pairs: list[tuple[int, int]], teacher_vocab: int, student_vocab: int, device=None):
        t = torch.tensor([a for a, _ in pairs], dtype=torch.long, device=device)
        s = torch.tensor([b for _, b in pairs], dtype=torch.long, device=device)
        return cls(t, s, complement(t, teacher_vocab), complement(s, student_vocab))


def cross_token_losses(s_logits: torch.Tensor, t_logits: torch.Tensor, kind: torch.Tensor, targets: torch.Tensor,
                       spec: LossSpec, mode: str, shared: SharedVocab | None, stats: dict | None = None):
    """Per-row (kd, ce) from full-vocabulary logits of both models ([N, Vs], [N, Vt]).

    ``kind[i]``: NONE (no teacher row: kd 0), ULD, or EXACT (one-to-one; ULD under mode uld).
    ce is the student's cross-entropy at T = 1 on its own targets. ``stats`` accumulates the
    teacher's probability mass on shared tokens at the rows compared over the shared vocabulary.
    """
    s32 = _f32(s_logits)
    ce = F.cross_entropy(s32, targets, reduction="none")
    t = spec.temperature
    s_logp, t_logp = F.log_softmax(s32 / t, -1), F.log_softmax(_f32(t_logits) / t, -1)
    exact = (kind == EXACT) if mode == "align" else torch.zeros_like(kind, dtype=torch.bool)
    uld = (kind != NONE) & ~exact
    kd = torch.zeros_like(ce)
    if uld.any():
        rows = uld.nonzero().squeeze(-1)
        kd = kd.index_put((rows,), uld_distance(s_logp[rows], t_logp[rows]))
    if exact.any():
        rows = exact.nonzero().squeeze(-1)
        t_b, s_b = shared.buckets(t_logp[rows], s_logp[rows])
        kd = kd.index_put((rows,), spec.divergence(s_b, t_b))
        if stats is not None:
            mass = t_logp[rows].index_select(-1, shared.teacher).exp().sum().item()
            stats["shared_mass"] = stats.get("shared_mass", 0.0) + mass
            stats["shared_rows"] = stats.get("shared_rows", 0) + rows.numel()
    if stats is not None:
        stats["uld_rows"] = stats.get("uld_rows", 0) + int(uld.sum())
    return kd * spec.scale, ce


# --- the teacher side of the chunked lm_head loss --------------------------------------------


@dataclass
class CrossChunk:
    """One chunk of teacher logits and what each row is compared with (see ``losses._chunk_step``)."""

    logits: torch.Tensor
    kind: torch.Tensor
    mode: str
    shared: SharedVocab | None
    stats: dict

    def token_losses(self, s_logits, targets, spec: LossSpec):
        return cross_token_losses(s_logits, self.logits, self.kind, targets, spec, self.mode, self.shared, self.stats)


@dataclass
class CrossTeacher:
    """The teacher's final hidden states at the rows aligned with the student's selected rows.

    ``hidden[i]`` belongs to the teacher position aligned with student row i (any row where
    ``kind[i]`` is NONE); ``weight`` is the teacher's lm_head.
    """

    hidden: torch.Tensor  # [N, Ht]
    weight: torch.Tensor  # [Vt, Ht]
    kind: torch.Tensor  # [N]
    mode: str
    shared: SharedVocab | None = None
    bias: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)

    def chunk(self, sl: slice, dtype: torch.dtype) -> CrossChunk:
        z = self.hidden[sl].to(dtype) @ self.weight.to(dtype).T
        z = z if self.bias is None else z + self.bias.to(dtype)
        return CrossChunk(z, self.kind[sl], self.mode, self.shared, self.stats)
