"""Distillation losses against plain references on random tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from slmkit.distill import losses as L

V = 37


def _logp(n=5, v=V, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.log_softmax(torch.randn(n, v, generator=g) * scale, -1)


def _ref_kl(p, q):  # plain probabilities, plain formula
    return (p * (p.log() - q.log())).sum(-1)


@pytest.mark.parametrize("kind", sorted(L.DIVERGENCES))
def test_identical_distributions_give_zero(kind):
    p = _logp()
    spec = L.LossSpec(kind=kind, beta=0.3, alpha=0.2)
    assert torch.allclose(spec.divergence(p, p), torch.zeros(5), atol=1e-6)


@pytest.mark.parametrize("kind", sorted(L.DIVERGENCES))
def test_different_distributions_give_positive(kind):
    spec = L.LossSpec(kind=kind, beta=0.3, alpha=0.2)
    assert (spec.divergence(_logp(seed=1), _logp(seed=2)) > 1e-3).all()


def test_kl_forms_match_plain_formula():
    s, t = _logp(seed=1), _logp(seed=2)
    assert torch.allclose(L.forward_kl(s, t), _ref_kl(t.exp(), s.exp()), atol=1e-5)
    assert torch.allclose(L.reverse_kl(s, t), _ref_kl(s.exp(), t.exp()), atol=1e-5)


def test_known_values_on_two_point_distribution():
    s = torch.tensor([[0.5, 0.5]]).log()
    t = torch.tensor([[0.9, 0.1]]).log()
    fkl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    rkl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert L.forward_kl(s, t).item() == pytest.approx(fkl, rel=1e-5)
    assert L.reverse_kl(s, t).item() == pytest.approx(rkl, rel=1e-5)
    assert L.total_variation(s, t).item() == pytest.approx(0.4, rel=1e-5)
    m = torch.tensor([0.7, 0.3])  # beta = 0.5 mixture
    jsd = 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)) + 0.5 * (
        0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    )
    assert L.generalized_jsd(s, t, 0.5).item() == pytest.approx(jsd, rel=1e-5)
    assert m.sum() == 1.0
    skew = 0.9 * math.log(0.9 / (0.2 * 0.9 + 0.8 * 0.5)) + 0.1 * math.log(0.1 / (0.2 * 0.1 + 0.8 * 0.5))
    assert L.skew_forward_kl(s, t, 0.2).item() == pytest.approx(skew, rel=1e-5)
    rskew = 0.5 * math.log(0.5 / (0.2 * 0.5 + 0.8 * 0.9)) + 0.5 * math.log(0.5 / (0.2 * 0.5 + 0.8 * 0.1))
    assert L.skew_reverse_kl(s, t, 0.2).item() == pytest.approx(rskew, rel=1e-5)


def test_jsd_endpoints_reduce_to_kl_forms_and_limits_agree():
    s, t = _logp(seed=3), _logp(seed=4)
    assert torch.equal(L.generalized_jsd(s, t, 0.0), L.forward_kl(s, t))
    assert torch.equal(L.generalized_jsd(s, t, 1.0), L.reverse_kl(s, t))
    # the endpoint definitions are the limits of the mixture form, not arbitrary choices
    b = 1e-6
    s64, t64 = s.double(), t.double()
    assert torch.allclose(L.generalized_jsd(s64, t64, b) / b, L.forward_kl(s64, t64), rtol=2e-3)
    assert torch.allclose(L.generalized_jsd(s64, t64, 1 - b) / b, L.reverse_kl(s64, t64), rtol=2e-3)


def test_skew_alpha_zero_is_plain_kl_and_skew_is_bounded():
    s, t = _logp(seed=5), _logp(seed=6)
    assert torch.equal(L.skew_forward_kl(s, t, 0.0), L.forward_kl(s, t))
    assert torch.equal(L.skew_reverse_kl(s, t, 0.0), L.reverse_kl(s, t))
    # KL(P || aP + (1-a)Q) <= -log(a): finite even where the student puts no mass
    s_zero = torch.full((1, 3), -float("inf"))
    s_zero[0, 0] = 0.0
    t3 = torch.tensor([[0.2, 0.3, 0.5]]).log()
    assert L.skew_forward_kl(s_zero, t3, 0.1).item() <= -math.log(0.1) + 1e-6


@pytest.mark.parametrize("kind", sorted(L.DIVERGENCES))
def test_gradients_match_finite_differences(kind):
    spec = L.LossSpec(kind=kind, beta=0.3, alpha=0.2, temperature=1.5)
    z_s = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(3, 7, dtype=torch.float64)

    def f(z):
        t = spec.temperature
        return spec.divergence(F.log_softmax(z / t, -1), F.log_softmax(z_t / t, -1)).sum()

    if kind == "tvd":  # |x| has a kink at 0, but random logits stay away from it
        assert torch.autograd.gradcheck(f, (z_s,), eps=1e-6, atol=1e-5)
    else:
        assert torch.autograd.gradcheck(f, (z_s,))
    f(z_s).backward()
    assert z_s.grad.abs().sum() > 0


def test_forward_kl_gradient_moves_student_toward_teacher():
    z_s = torch.zeros(1, 4, requires_grad=True)
    z_t = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    kd, _ = L.token_losses(z_s, z_t, torch.tensor([0]), L.LossSpec())
    kd.sum().backward()
    assert z_s.grad[0, 0] < 0 and (z_s.grad[0, 1:] > 0).all()


def test_temperature_and_t2_scaling():
    z_s, z_t = torch.randn(4, V), torch.randn(4, V)
    tgt = torch.randint(0, V, (4,))
    t = 2.0
    plain = L.forward_kl(F.log_softmax(z_s / t, -1), F.log_softmax(z_t / t, -1))
    kd, ce = L.token_losses(z_s, z_t, tgt, L.LossSpec(temperature=t, t2_scaling=True))
    assert torch.allclose(kd, plain * 4.0)
    kd2, _ = L.token_losses(z_s, z_t, tgt, L.LossSpec(temperature=t, t2_scaling=False))
    assert torch.allclose(kd2, plain)
    assert torch.allclose(ce, F.cross_entropy(z_s, tgt, reduction="none"))  # CE ignores T


def test_topk_with_tail_equals_full_kl_when_k_is_vocab_and_bounds_it_otherwise():
    z_s, z_t = torch.randn(6, V) * 2, torch.randn(6, V) * 2
    tgt = torch.randint(0, V, (6,))
    spec = L.LossSpec(temperature=1.3)
    full, _ = L.token_losses(z_s, z_t, tgt, spec)
    t_logp = F.log_softmax(z_t / 1.3, -1)
    for k, exact in [(V, True), (8, False)]:
        lp, idx = t_logp.topk(k, -1)
        kd, _ = L.topk_token_losses(z_s, idx, lp, tgt, spec)
        if exact:
            assert torch.allclose(kd, full, atol=1e-4)
        else:  # data-processing inequality: coarser partition, smaller divergence
            assert (kd <= full + 1e-5).all() and (kd > 0).all()


def test_tail_bucket_holds_the_missing_mass():
    logp = F.log_softmax(torch.randn(3, V), -1)
    top, _ = logp.topk(5, -1)
    b = L.with_tail(top).exp()
    assert torch.allclose(b.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(b[:, -1], 1 - top.exp().sum(-1), atol=1e-6)


def _naive_total(h, w, z_t, tgt, spec):
    kd, ce = L.token_losses(h @ w.T, z_t, tgt, spec)
    return spec.kd_weight * kd.sum() + spec.ce_weight * ce.sum()


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tvd", "skew_forward_kl"])
@pytest.mark.parametrize("chunk,temp", [(3, 2.0), (64, 1.0)])
def test_chunked_head_loss_matches_full_logits_loss_and_grads(kind, chunk, temp):
    torch.manual_seed(0)
    n, hs, ht = 10, 8, 12
    h = torch.randn(n, hs, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, hs, dtype=torch.float64, requires_grad=True)
    th, tw = torch.randn(n, ht, dtype=torch.float64), torch.randn(V, ht, dtype=torch.float64)
    tgt = torch.randint(0, V, (n,))
    spec = L.LossSpec(kind=kind, temperature=temp, ce_weight=0.3, kd_weight=0.7, beta=0.4)
    ref = _naive_total(h, w, th @ tw.T, tgt, spec)
    gh_ref, gw_ref = torch.autograd.grad(ref, (h, w))
    stats = {}
    got = L.chunked_head_loss(h, w, L.TeacherLogits(th, tw), tgt, spec, chunk_size=chunk, stats=stats)
    gh, gw = torch.autograd.grad(got * 2.0, (h, w))  # upstream gradient is honoured
    assert torch.allclose(got, ref, rtol=1e-9)
    assert torch.allclose(gh, 2 * gh_ref, rtol=1e-6, atol=1e-8)
    assert torch.allclose(gw, 2 * gw_ref, rtol=1e-6, atol=1e-8)
    assert stats["tokens"] == n


def test_chunked_head_loss_topk_and_ce_only_match_reference():
    torch.manual_seed(1)
    n, hs = 9, 6
    h = torch.randn(n, hs, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, hs, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(n, V, dtype=torch.float64)
    tgt = torch.randint(0, V, (n,))
    spec = L.LossSpec(ce_weight=0.5)
    lp, idx = F.log_softmax(z_t, -1).topk(6, -1)
    kd, ce = L.topk_token_losses(h @ w.T, idx, lp, tgt, spec)
    ref = kd.sum() + 0.5 * ce.sum()
    got = L.chunked_head_loss(h, w, L.TeacherTopK(idx, lp), tgt, spec, chunk_size=4)
    assert torch.allclose(got, ref)
    assert torch.allclose(torch.autograd.grad(got, h)[0], torch.autograd.grad(ref, h)[0])
    ce_only = L.chunked_head_loss(h, w, None, tgt, L.LossSpec(kd_weight=0.0, ce_weight=1.0), chunk_size=4)
    assert torch.allclose(ce_only, F.cross_entropy(h @ w.T, tgt, reduction="sum"))


def test_chunked_head_loss_bias_and_bf16_compute():
    torch.manual_seed(2)
    n, hs = 16, 32
    h = torch.randn(n, hs, requires_grad=True)
    w = torch.randn(V, hs, requires_grad=True)
    b = torch.randn(V, requires_grad=True)
    th, tw = torch.randn(n, hs), torch.randn(V, hs)
    tgt = torch.randint(0, V, (n,))
    spec = L.LossSpec()
    ref = L.token_losses(h @ w.T + b, th @ tw.T, tgt, spec)[0].sum()
    got = L.chunked_head_loss(h, w, L.TeacherLogits(th, tw), tgt, spec, bias=b, chunk_size=5)
    g_ref = torch.autograd.grad(ref, (h, w, b))
    g = torch.autograd.grad(got, (h, w, b))
    assert torch.allclose(got, ref, rtol=1e-5)
    assert all(torch.allclose(a, r, rtol=1e-4, atol=1e-5) for a, r in zip(g, g_ref))
    # bf16 matmuls, fp32 softmax: the loss stays close to the fp32 value
    got16 = L.chunked_head_loss(h, w, L.TeacherLogits(th, tw), tgt, spec, bias=b, compute_dtype=torch.bfloat16)
    assert got16.dtype == torch.float32
    assert abs(got16.item() - ref.item()) / ref.item() < 0.05


def test_bf16_head_gradient_accumulated_over_many_chunks_stays_close_to_fp32():
    # under bf16 the lm_head gradient accumulates chunk by chunk in bf16 (inside the matmul);
    # over 16 chunks its error must stay of the order of a single bf16 rounding
    torch.manual_seed(3)
    n, hs = 256, 32
    h = torch.randn(n, hs, requires_grad=True)
    w = torch.randn(V, hs, requires_grad=True)
    th, tw = torch.randn(n, hs), torch.randn(V, hs)
    tgt = torch.randint(0, V, (n,))
    spec = L.LossSpec(ce_weight=0.5)
    args = (L.TeacherLogits(th, tw), tgt, spec)
    (g32,) = torch.autograd.grad(L.chunked_head_loss(h, w, *args, chunk_size=16), (w,))
    (g16,) = torch.autograd.grad(
        L.chunked_head_loss(h, w, *args, chunk_size=16, compute_dtype=torch.bfloat16), (w,)
    )
    assert g16.dtype == torch.float32
    rel = (g16 - g32).norm() / g32.norm()
    assert rel < 2e-2, rel  # bf16 matmul inputs alone give ~1e-2 here
    # one chunk (no accumulation) is the floor the many-chunk error is compared with
    (g1,) = torch.autograd.grad(
        L.chunked_head_loss(h, w, *args, chunk_size=n, compute_dtype=torch.bfloat16), (w,)
    )
    assert rel < 1.5 * (g1 - g32).norm() / g32.norm()


@pytest.mark.parametrize("temp,ce_w", [(1.0, 0.0), (1.0, 0.4), (2.0, 0.3)])
def test_forward_kl_chunk_matches_in_place_closed_form(temp, ce_w):
    # the functional form torch.compile fuses must be the same math as the eager closed form
    torch.manual_seed(3)
    z_s, z_t = torch.randn(6, V, dtype=torch.float64) * 3, torch.randn(6, V, dtype=torch.float64) * 3
    tgt = torch.randint(0, V, (6,))
    spec = L.LossSpec(temperature=temp, ce_weight=ce_w, kd_weight=0.7)
    ref = L._chunk_grad_forward_kl(z_s.clone(), z_t.clone(), tgt, spec)
    got = L.forward_kl_chunk(z_s, z_t, tgt, temp, spec.scale, spec.kd_weight, spec.ce_weight)
    assert all(torch.allclose(a, r, rtol=1e-10, atol=1e-12) for a, r in zip(got, ref))


@pytest.mark.slow  # pays a torch.compile (tens of seconds on a small CPU)
def test_chunked_head_loss_compiled_matches_eager_with_a_padded_last_chunk():
    torch.manual_seed(4)
    n, hs = 11, 16
    h = torch.randn(n, hs, requires_grad=True)
    w = torch.randn(V, hs, requires_grad=True)
    th, tw = torch.randn(n, hs), torch.randn(V, hs)
    tgt = torch.randint(0, V, (n,))
    spec = L.LossSpec(ce_weight=0.2)
    out = {}
    for compile in (False, True):
        loss = L.chunked_head_loss(h, w, L.TeacherLogits(th, tw), tgt, spec, chunk_size=4, compile=compile)
        out[compile] = (loss, *torch.autograd.grad(loss, (h, w)))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(out[True], out[False]))


def test_hidden_state_loss_mse_cosine_and_projection():
    s = [torch.randn(5, 4), torch.randn(5, 4)]
    assert L.hidden_state_loss(s, s, "mse").item() == 0.0
    assert L.hidden_state_loss(s, [2 * x for x in s], "cosine").abs().item() < 1e-6
    t = [torch.randn(5, 4), torch.randn(5, 4)]
    ref = (F.mse_loss(s[0], t[0]) + F.mse_loss(s[1], t[1])) / 2
    assert torch.allclose(L.hidden_state_loss(s, t, "mse"), ref)
    proj = [torch.nn.Linear(4, 6), torch.nn.Linear(4, 6)]
    t6 = [torch.randn(5, 6), torch.randn(5, 6)]
    loss = L.hidden_state_loss(s, t6, "cosine", proj)
    loss.backward()
    assert proj[0].weight.grad is not None and loss.item() > 0
    with pytest.raises(ValueError):
        L.hidden_state_loss(s, t, "l1")


def test_default_layer_map_spreads_student_over_teacher_depth():
    assert L.default_layer_map(2, 4) == {1: 2, 2: 4}
    assert L.default_layer_map(15, 30)[15] == 30
