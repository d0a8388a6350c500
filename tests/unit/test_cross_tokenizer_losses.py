"""Cross-tokenizer losses against plain references on random tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slmkit.distill import losses as L
from slmkit.distill.cross_tokenizer import (
    EXACT,
    NONE,
    ULD,
    CrossTeacher,
    SharedVocab,
    cross_token_losses,
    uld_distance,
)


def _uld_reference(p: list[float], q: list[float]) -> float:
    p, q = sorted(p, reverse=True), sorted(q, reverse=True)
    n = max(len(p), len(q))
    p, q = p + [0.0] * (n - len(p)), q + [0.0] * (n - len(q))
    return sum(abs(a - b) for a, b in zip(p, q))


def test_uld_matches_the_sorted_l1_reference_across_vocabulary_sizes():
    s, t = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 11, dtype=torch.float64)
    got = uld_distance(s.log_softmax(-1), t.log_softmax(-1))
    want = [_uld_reference(s[i].softmax(-1).tolist(), t[i].softmax(-1).tolist()) for i in range(5)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-12)


def test_uld_of_identical_or_permuted_distributions_is_zero_and_symmetric():
    z = torch.randn(4, 9, dtype=torch.float64)
    logp = z.log_softmax(-1)
    assert uld_distance(logp, logp).abs().max() < 1e-12
    assert uld_distance(logp, logp[:, torch.randperm(9)]).abs().max() < 1e-12
    # padding: the same distribution over a larger vocabulary with zero-probability entries
    padded = torch.cat([logp, torch.full((4, 3), float("-inf"), dtype=torch.float64)], -1)
    assert uld_distance(logp, padded).abs().max() < 1e-12
    other = torch.randn(4, 9, dtype=torch.float64).log_softmax(-1)
    assert torch.allclose(uld_distance(logp, other), uld_distance(other, logp))
    assert (uld_distance(logp, other) > 0).all()


def _identity_shared(v: int) -> SharedVocab:
    ids = list(range(v))
    return SharedVocab.build(list(zip(ids, ids)), v, v)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_align_with_identical_vocabularies_is_the_same_vocabulary_forward_kl(temperature):
    s, t = torch.randn(6, 13, dtype=torch.float64), torch.randn(6, 13, dtype=torch.float64)
    targets = torch.randint(0, 13, (6,))
    spec = L.LossSpec(temperature=temperature)
    kind = torch.full((6,), EXACT)
    kd, ce = cross_token_losses(s, t, kind, targets, spec, "align", _identity_shared(13))
    want_kd, want_ce = L.token_losses(s, t, targets, spec)
    assert torch.allclose(kd, want_kd, atol=1e-12) and torch.allclose(ce, want_ce, atol=1e-12)


def test_align_compares_shared_tokens_plus_one_rest_bucket_each():
    # teacher vocabulary 6, student 5; teacher ids 0, 2, 5 are student ids 4, 0, 1
    pairs = [(0, 4), (2, 0), (5, 1)]
    shared = SharedVocab.build(pairs, 6, 5)
    s, t = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    kd, _ = cross_token_losses(s, t, torch.full((3,), EXACT), torch.zeros(3, dtype=torch.long),
                               L.LossSpec(), "align", shared)
    for i in range(3):
        p, q = t[i].softmax(-1).tolist(), s[i].softmax(-1).tolist()
        pb = [p[a] for a, _ in pairs] + [p[1] + p[3] + p[4]]
        qb = [q[b] for _, b in pairs] + [q[2] + q[3]]
        ref = sum(x * (math.log(x) - math.log(y)) for x, y in zip(pb, qb))
        assert kd[i].item() == pytest.approx(ref, abs=1e-10)


def test_a_vocabulary_inside_the_other_compares_distributions_conditioned_on_the_shared_tokens():
    pairs = [(0, 0), (1, 1), (3, 2)]  # the student's 3 tokens are all teacher tokens
    shared = SharedVocab.build(pairs, 5, 3)
    s, t = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    kd, _ = cross_token_losses(s, t, torch.full((2,), EXACT), torch.zeros(2, dtype=torch.long),
                               L.LossSpec(), "align", shared)
    t_cond = t[:, [0, 1, 3]].log_softmax(-1)
    assert torch.allclose(kd, L.forward_kl(s.log_softmax(-1), t_cond), atol=1e-12)
    assert torch.isfinite(kd).all()


def test_row_kinds_pick_uld_kl_or_nothing_and_mode_uld_uses_uld_everywhere():
    s, t = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    kind, targets, spec = torch.tensor([NONE, ULD, EXACT]), torch.zeros(3, dtype=torch.long), L.LossSpec()
    shared, stats = _identity_shared(8), {}
    kd, ce = cross_token_losses(s, t, kind, targets, spec, "align", shared, stats)
    s_lp, t_lp = s.log_softmax(-1), t.log_softmax(-1)
    assert kd[0] == 0
    assert kd[1].item() == pytest.approx(uld_distance(s_lp[1:2], t_lp[1:2]).item())
    assert kd[2].item() == pytest.approx(L.forward_kl(s_lp[2:], t_lp[2:]).item())
    assert torch.allclose(ce, F.cross_entropy(s, targets, reduction="none"))
    assert stats["shared_rows"] == 1 and stats["shared_mass"] == pytest.approx(1.0) and stats["uld_rows"] == 1
    kd_uld, _ = cross_token_losses(s, t, kind, targets, spec, "uld", shared)
    assert kd_uld[0] == 0 and torch.allclose(kd_uld[1:], uld_distance(s_lp[1:], t_lp[1:]))


def _head_loss(teacher, h, w, targets, spec, chunk):
    h, w = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = L.chunked_head_loss(h, w, teacher, targets, spec, chunk_size=chunk, compute_dtype=torch.float64)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [3, 64])
def test_chunked_align_on_one_vocabulary_equals_the_chunked_forward_kl_with_its_gradients(chunk):
    n, hs, ht, v = 10, 6, 5, 17
    h_s, w_s = torch.randn(n, hs, dtype=torch.float64), torch.randn(v, hs, dtype=torch.float64)
    h_t, w_t = torch.randn(n, ht, dtype=torch.float64), torch.randn(v, ht, dtype=torch.float64)
    targets, spec = torch.randint(0, v, (n,)), L.LossSpec(ce_weight=0.3)
    cross = CrossTeacher(h_t, w_t, torch.full((n,), EXACT), "align", _identity_shared(v))
    got = _head_loss(cross, h_s, w_s, targets, spec, chunk)
    want = _head_loss(L.TeacherLogits(h_t, w_t), h_s, w_s, targets, spec, chunk)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-10)


def test_chunked_uld_gradient_matches_autograd_on_full_logits():
    n, hs, ht, vs, vt = 7, 4, 3, 9, 12
    h_s, w_s = torch.randn(n, hs, dtype=torch.float64), torch.randn(vs, hs, dtype=torch.float64)
    h_t, w_t = torch.randn(n, ht, dtype=torch.float64), torch.randn(vt, ht, dtype=torch.float64)
    kind = torch.tensor([ULD, NONE, ULD, ULD, NONE, ULD, ULD])
    targets, spec = torch.randint(0, vs, (n,)), L.LossSpec(ce_weight=0.5, temperature=2.0)
    got = _head_loss(CrossTeacher(h_t, w_t, kind, "uld"), h_s, w_s, targets, spec, 2)
    h, w = h_s.clone().requires_grad_(True), w_s.clone().requires_grad_(True)
    z = h @ w.T
    uld = uld_distance((z / 2.0).log_softmax(-1), ((h_t @ w_t.T) / 2.0).log_softmax(-1)) * 4.0
    total = (uld * (kind != NONE)).sum() + 0.5 * F.cross_entropy(z, targets, reduction="sum")
    total.backward()
    assert torch.allclose(got[0], total.detach()) and torch.allclose(got[1], h.grad) and torch.allclose(got[2], w.grad)
