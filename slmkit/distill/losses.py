"""Distillation losses: pure tensor functions, no models, no files.

Every divergence takes student and teacher log-probabilities over the last dimension and
returns one value per token (shape ``[...]``); reductions happen in :func:`chunked_head_loss`,
which sums over selected tokens only, so padding never dilutes the mean.

Conventions (teacher P, student Q), as in GKD (Agarwal et al. 2024) and DistiLLM (Ko et al.
2024):

- forward KL  KL(P || Q): mode covering, the classic word-level KD loss.
- reverse KL  KL(Q || P): mode seeking.
- generalized JSD(beta) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q.
  It vanishes at beta in {0, 1}; JSD(beta)/beta -> forward KL as beta -> 0 and
  JSD(beta)/(1 - beta) -> reverse KL as beta -> 1, so (like TRL) the endpoints are defined as
  those KL forms.
- total variation 0.5 * sum |P - Q|.
- skew forward KL  KL(P || alpha P + (1 - alpha) Q), skew reverse KL KL(Q || alpha Q + (1 - alpha) P);
  alpha = 0 gives the plain KL forms, and alpha > 0 keeps the loss finite where Q -> 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# --- divergences on log-probabilities -------------------------------------------------------


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row; 0 * log 0 counts as 0 (masked vocab entries, empty top-k tails)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def forward_kl(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    return _kl(t_logp, s_logp)


def reverse_kl(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    return _kl(s_logp, t_logp)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(weight_a * a + (1 - weight_a) * b), stable in log space."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def generalized_jsd(s_logp: torch.Tensor, t_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    if beta == 0.0:
        return forward_kl(s_logp, t_logp)
    if beta == 1.0:
        return reverse_kl(s_logp, t_logp)
    log_m = _log_mix(t_logp, s_logp, beta)
    return beta * _kl(t_logp, log_m) + (1.0 - beta) * _kl(s_logp, log_m)


def total_variation(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    return 0.5 * (s_logp.exp() - t_logp.exp()).abs().sum(-1)


def skew_forward_kl(s_logp: torch.Tensor, t_logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    if alpha == 0.0:
        return forward_kl(s_logp, t_logp)
    return _kl(t_logp, _log_mix(t_logp, s_logp, alpha))


def skew_reverse_kl(s_logp: torch.Tensor, t_logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    if alpha == 0.0:
        return reverse_kl(s_logp, t_logp)
    return _kl(s_logp, _log_mix(s_logp, t_logp, alpha))


DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "tvd": total_variation,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
}


@dataclass(frozen=True)
class LossSpec:
    """The loss's numbers, free of pydantic so the math module stays importable on its own."""

    kind: str = "forward_kl"
    temperature: float = 1.0
    t2_scaling: bool = True  # Hinton et al.: keeps soft-target gradients comparable across T
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    beta: float = 0.5  # jsd only
    alpha: float = 0.1  # skew KLs only

    def divergence(self, s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
        fn = DIVERGENCES[self.kind]
        if self.kind == "jsd":
            return fn(s_logp, t_logp, self.beta)
        if self.kind.startswith("skew_"):
            return fn(s_logp, t_logp, self.alpha)
        return fn(s_logp, t_logp)

    @property
    def scale(self) -> float:
        return self.temperature**2 if self.t2_scaling else 1.0


# --- per-token loss from logits ---------------------------------------------------------------


def token_losses(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor | None,
    targets: torch.Tensor,
    spec: LossSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (kd, ce) losses in fp32 from full-vocabulary logits [N, V]."""
    s32 = _f32(s_logits)
    ce = F.cross_entropy(s32, targets, reduction="none")
    if t_logits is None or spec.kd_weight == 0.0:
        return torch.zeros_like(ce), ce
    t = spec.temperature
    kd = spec.divergence(F.log_softmax(s32 / t, -1), F.log_softmax(_f32(t_logits) / t, -1))
    return kd * spec.scale, ce


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least fp32: softmaxes over a 50k vocabulary lose too much in bf16 (float64 stays, for tests)."""
    return x if x.dtype == torch.float64 else x.float()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate on both sides of -ln 2 (Maechler 2012)."""
    x = x.clamp(max=-1e-7)  # a top-k summing to >= 1 by rounding still leaves a tiny tail
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def with_tail(topk_logp: torch.Tensor) -> torch.Tensor:
    """[N, k] top-k log-probs -> [N, k + 1] with the mass outside the top-k as the last bucket."""
    tail = log1mexp(torch.logsumexp(topk_logp, -1, keepdim=True))
    return torch.cat([topk_logp, tail], -1)


def topk_token_losses(
    s_logits: torch.Tensor,
    t_topk_idx: torch.Tensor,
    t_topk_logp: torch.Tensor,
    targets: torch.Tensor,
    spec: LossSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token losses against a cached teacher top-k (log-probs already at spec.temperature).

    Both distributions are collapsed to k + 1 buckets (the teacher's top-k tokens and one tail
    bucket), so the divergence is exact on that partition and, by the data-processing
    inequality, never above the full-vocabulary divergence.
    """
    s32 = _f32(s_logits)
    ce = F.cross_entropy(s32, targets, reduction="none")
    s_logp = F.log_softmax(s32 / spec.temperature, -1).gather(-1, t_topk_idx.long())
    kd = spec.divergence(with_tail(s_logp), with_tail(_f32(t_topk_logp)))
    return kd * spec.scale, ce


# --- chunked loss over the lm_head ----------------------------------------------------------
#
# The student's and teacher's logits are the biggest tensors of a distillation step
# ([tokens, vocab] in fp32 for each model: 8 x 256 tokens x 49152 x 4 bytes = 400 MB apiece for
# SmolLM2). Running each lm_head on a chunk of hidden states, computing that chunk's loss and its
# gradient right away, and keeping only the gradient w.r.t. the (small) hidden states means only
# one chunk of logits ever exists (the same idea as Liger's fused linear cross-entropy).


@dataclass
class TeacherLogits:
    """The teacher's final hidden states at the selected tokens and its lm_head weight."""

    hidden: torch.Tensor  # [N, Ht]
    weight: torch.Tensor  # [V, Ht]
    bias: torch.Tensor | None = None


@dataclass
class TeacherTopK:
    """The teacher's cached top-k log-probabilities at the selected tokens."""

    idx: torch.Tensor  # [N, k]
    logp: torch.Tensor  # [N, k]


def _teacher_chunk(teacher, sl: slice, dtype: torch.dtype):
    if isinstance(teacher, TeacherLogits):
        z = teacher.hidden[sl].to(dtype) @ teacher.weight.to(dtype).T
        return z if teacher.bias is None else z + teacher.bias.to(dtype)
    if isinstance(teacher, TeacherTopK):
        return teacher.idx[sl], teacher.logp[sl]
    if hasattr(teacher, "chunk"):  # another vocabulary (slmkit.distill.cross_tokenizer.CrossTeacher)
        return teacher.chunk(sl, dtype)
    return None


def _chunk_grad_forward_kl(z_s, z_t, targets, spec: LossSpec):
    """Forward KL + CE and d(loss)/d(student logits) in closed form: one pass, no autograd graph.

    d/dz KL(softmax(zt/T) || softmax(z/T)) * T^2 = T * (softmax(z/T) - softmax(zt/T)). Written with
    in-place ops on [chunk, vocab] buffers: at a 50k vocabulary this elementwise work, not the
    matmuls, is where a naive loss spends much of its time.
    """
    t = spec.temperature
    z = _f32(z_s)
    log_q = F.log_softmax(z if t == 1.0 else z / t, -1)
    log_p = F.log_softmax(_f32(z_t) if t == 1.0 else _f32(z_t) / t, -1)
    p = log_p.exp()
    log_q1 = log_q if t == 1.0 else F.log_softmax(z, -1)
    ce = -log_q1.gather(-1, targets[:, None]).squeeze(-1)
    kd = log_p.sub_(log_q).mul_(p).sum(-1).mul_(spec.scale)  # log_p is not needed any more
    a, c = spec.kd_weight * spec.scale / t, spec.ce_weight
    if t == 1.0:  # q serves both terms: a (q - p) + c (q - onehot)
        grad = log_q.exp_().mul_(a + c).sub_(p, alpha=a)
    else:
        grad = log_q.exp_().sub_(p).mul_(a)
        if c:
            grad.add_(log_q1.exp_(), alpha=c)
    if c:
        grad.scatter_add_(-1, targets[:, None], torch.full_like(ce[:, None], -c))
    return kd, ce, grad


def _chunk_grad_autograd(z_s, teacher_chunk, targets, spec: LossSpec):
    z = _f32(z_s.detach()).requires_grad_(True)
    with torch.enable_grad():
        if hasattr(teacher_chunk, "token_losses"):  # its own comparison (cross-tokenizer)
            kd, ce = teacher_chunk.token_losses(z, targets, spec)
        elif isinstance(teacher_chunk, tuple):
            kd, ce = topk_token_losses(z, *teacher_chunk, targets, spec)
        else:
            kd, ce = token_losses(z, teacher_chunk, targets, spec)
        total = spec.kd_weight * kd.sum() + spec.ce_weight * ce.sum()
        (grad,) = torch.autograd.grad(total, z)
    return kd.detach(), ce.detach(), grad


def forward_kl_chunk(z_s, z_t, targets, temperature: float, scale: float, kd_weight: float, ce_weight: float):
    """The closed form of :func:`_chunk_grad_forward_kl` without in-place ops, for torch.compile.

    Written so that inductor needs three passes over each row of bf16 logits and no [chunk,
    vocab] fp32 temporaries (eager runs about fifteen full passes, which at a 50k vocabulary
    cost more than the lm_head matmuls): the row maxima; then, in one pass, both
    softmax normalisers and E_p[z_t - z_s], using KL(p || q) = E_p[z_t - z_s] / T - lse_t + lse_s
    (so the KL needs no pass of its own); then the gradient.
    Returns (kd, ce, d(loss)/d(z_s) in z_s's dtype).
    """
    z, zt = _f32(z_s), _f32(z_t)
    inv = 1.0 / temperature
    m_s, m_t = z.amax(-1, keepdim=True), zt.amax(-1, keepdim=True)
    e_t = torch.exp((zt - m_t) * inv)
    s_t = e_t.sum(-1, keepdim=True)
    gap = (e_t * (zt - z)).sum(-1, keepdim=True) * inv  # s_t * E_p[z_t - z_s] / T
    lse_t = m_t * inv + torch.log(s_t)
    lse_s = m_s * inv + torch.log(torch.exp((z - m_s) * inv).sum(-1, keepdim=True))
    kd = (gap / s_t - lse_t + lse_s).squeeze(-1) * scale
    lse1 = lse_s if temperature == 1.0 else m_s + torch.log(torch.exp(z - m_s).sum(-1, keepdim=True))
    ce = (lse1 - z.gather(-1, targets[:, None])).squeeze(-1)
    grad = (kd_weight * scale * inv) * (torch.exp(z * inv - lse_s) - torch.exp(zt * inv - lse_t))
    if ce_weight:
        onehot = torch.arange(z.shape[-1], device=z.device) == targets[:, None]
        grad = grad + ce_weight * (torch.exp(z - lse1) - onehot.to(grad.dtype))
    return kd, ce, grad.to(z_s.dtype)


@functools.cache
def _compiled_forward_kl_chunk():
    # fixed shapes (the last chunk is padded), so one compilation serves the whole run and the
    # inductor cache on disk serves the next run
    return torch.compile(forward_kl_chunk, dynamic=False, fullgraph=True)


def _fused_forward_kl(z_s, z_t, targets, spec: LossSpec, chunk_size: int):
    n = z_s.shape[0]
    if n < chunk_size:  # pad the last chunk: one shape, one compilation
        pad = chunk_size - n
        z_s, z_t = F.pad(z_s, (0, 0, 0, pad)), F.pad(z_t, (0, 0, 0, pad))
        targets = F.pad(targets, (0, pad))
    fn = _compiled_forward_kl_chunk()
    kd, ce, grad = fn(z_s, z_t, targets, spec.temperature, spec.scale, spec.kd_weight, spec.ce_weight)
    return kd[:n], ce[:n], grad[:n]


def _chunk_step(h, w_c, b_c, teacher, targets, sl, spec, dtype, compiled: bool, chunk_size: int):
    """Loss sums and gradients for one chunk of selected tokens."""
    z_s = h[sl].to(dtype) @ w_c.T
    if b_c is not None:
        z_s = z_s + b_c
    z_t = _teacher_chunk(teacher, sl, dtype)
    if spec.kind == "forward_kl" and isinstance(z_t, torch.Tensor) and compiled:
        kd, ce, grad_z = _fused_forward_kl(z_s, z_t, targets[sl], spec, chunk_size)
    elif spec.kind == "forward_kl" and isinstance(z_t, torch.Tensor):
        kd, ce, grad_z = _chunk_grad_forward_kl(z_s, z_t, targets[sl], spec)
    else:
        kd, ce, grad_z = _chunk_grad_autograd(z_s, z_t, targets[sl], spec)
    if z_t is None:
        kd = torch.zeros_like(ce)
    grad_z = grad_z.to(dtype)
    return kd, ce, grad_z, grad_z @ w_c


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, teacher, targets, spec, chunk_size, dtype, stats, compiled):
        w_c = weight.detach().to(dtype)  # cast once, not once per chunk
        b_c = None if bias is None else bias.detach().to(dtype)
        h = hidden.detach()
        grad_h = torch.empty_like(h)
        acc = torch.promote_types(weight.dtype, torch.float32)  # fp32 master grads under bf16 compute
        grad_w = grad_b = None
        kd_sum = ce_sum = torch.zeros((), dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)
        for start in range(0, h.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            kd, ce, grad_z, gh = _chunk_step(h, w_c, b_c, teacher, targets, sl, spec, dtype, compiled, chunk_size)
            kd_sum, ce_sum = kd_sum + kd.sum(), ce_sum + ce.sum()
            grad_h[sl] = gh.to(h.dtype)
            # the [vocab, hidden] gradient accumulates inside the matmul (beta=1), in the compute
            # dtype: a separate per-chunk product plus an upcasting add cost ~4x the matmul at a
            # 50k vocabulary. Under bf16 each chunk's sum is rounded to bf16 (the same rounding
            # autocast applies to every other layer's weight gradient); fp32 stays exact.
            h_c = h[sl].to(dtype)
            grad_w = grad_z.T @ h_c if grad_w is None else grad_w.addmm_(grad_z.T, h_c)
            if bias is not None:
                gb = grad_z.to(acc).sum(0)
                grad_b = gb if grad_b is None else grad_b.add_(gb)
        if grad_w is None:  # no selected tokens
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
            grad_b = None if bias is None else torch.zeros(bias.shape, dtype=acc, device=bias.device)
        grad_w = grad_w.to(acc)  # the weight's own (fp32) dtype, as autograd accumulates it
        stats["kd_sum"], stats["ce_sum"], stats["tokens"] = kd_sum, ce_sum, h.shape[0]
        ctx.save_for_backward(grad_h, grad_w, grad_b if grad_b is not None else torch.empty(0))
        ctx.has_bias = bias is not None
        return spec.kd_weight * kd_sum + spec.ce_weight * ce_sum

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        gb = grad_b * grad_out if ctx.has_bias else None
        return grad_h * grad_out, (grad_w * grad_out), gb, None, None, None, None, None, None, None


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher: TeacherLogits | TeacherTopK | None,
    targets: torch.Tensor,
    spec: LossSpec,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 256,
    compute_dtype: torch.dtype | None = None,
    stats: dict | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Sum over tokens of kd_weight * KD + ce_weight * CE, computed chunk by chunk.

    hidden: the student's final hidden states at the selected tokens [N, H] (only tokens that
    count: the mask is applied by selecting rows, so padding costs nothing). weight: the
    student's lm_head [V, H]. targets: the next token at each row [N]. compute_dtype: the
    matmul dtype (bf16 under mixed precision); softmaxes and divergences are always fp32.
    Gradients flow to ``hidden``, ``weight`` and ``bias``. Divide by the token count for a mean.
    compile: run the forward-KL chunk math through torch.compile (:func:`forward_kl_chunk`);
    other divergences and top-k teachers stay eager.
    """
    dtype = compute_dtype or weight.dtype
    stats = {} if stats is None else stats
    return _ChunkedHeadLoss.apply(hidden, weight, bias, teacher, targets, spec, chunk_size, dtype, stats, compile)


# --- hidden-state loss ----------------------------------------------------------------------


def default_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer i (1-based output of block i) -> the teacher layer at the same relative depth."""
    return {i: round(i * teacher_layers / student_layers) for i in range(1, student_layers + 1)}


def hidden_state_loss(
    s_hidden: list[torch.Tensor],
    t_hidden: list[torch.Tensor],
    kind: str = "mse",
    projections: list[torch.nn.Module] | None = None,
) -> torch.Tensor:
    """Mean over pairs and tokens of MSE or (1 - cosine) between matched hidden states [N, H].

    ``projections[i]`` maps the student's width to the teacher's when they differ (learned).
    """
    losses = []
    for i, (s, t) in enumerate(zip(s_hidden, t_hidden, strict=True)):
        s = projections[i](s) if projections else s
        s, t = s.float(), t.float()
        if kind == "mse":
            losses.append(F.mse_loss(s, t))
        elif kind == "cosine":
            losses.append((1.0 - F.cosine_similarity(s, t, dim=-1)).mean())
        else:
            raise ValueError(f"unknown hidden-state loss {kind!r}")
    return torch.stack(losses).mean()


@torch.no_grad()
def eval_sums(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    teacher: TeacherLogits | TeacherTopK | None,
    targets: torch.Tensor,
    *,
    chunk_size: int = 256,
    compute_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Sums over tokens of forward KL to the teacher (T=1), cross-entropy and top-1 agreement.

    Against a top-k cache the KL is the (k+1)-bucket KL and agreement compares with the
    teacher's top-1 token.
    """
    dtype = compute_dtype or weight.dtype
    w = weight.to(dtype)
    out = {"kl": 0.0, "ce": 0.0, "top1": 0.0, "tokens": float(hidden.shape[0])}
    for start in range(0, hidden.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        z = _f32(hidden[sl].to(dtype) @ w.T)
        out["ce"] += F.cross_entropy(z, targets[sl], reduction="sum").item()
        t = _teacher_chunk(teacher, sl, dtype)
        if isinstance(t, tuple):
            idx, logp = t
            s_logp = F.log_softmax(z, -1).gather(-1, idx.long())
            out["kl"] += forward_kl(with_tail(s_logp), with_tail(_f32(logp))).sum().item()
            out["top1"] += (z.argmax(-1) == idx[:, 0].long()).sum().item()
        elif t is not None:
            out["kl"] += forward_kl(F.log_softmax(z, -1), F.log_softmax(_f32(t), -1)).sum().item()
            out["top1"] += (z.argmax(-1) == t.argmax(-1)).sum().item()
    return out
