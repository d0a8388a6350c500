"""Pure importance math for pruning: tensors in, tensors out; no models, no files.

Every statistic here is written so it can be accumulated batch by batch (sums and counts),
which is what lets calibration stream over many samples with bounded memory.
"""

from __future__ import annotations

import math

import torch


def token_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity between matching token vectors of ``a`` and ``b`` ([..., d] -> [...])."""
    a, b = a.double(), b.double()
    dot = (a * b).sum(-1)
    return dot / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def block_influence_sum(x_in: torch.Tensor, x_out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over valid tokens of 1 - cos(x_in, x_out): ShortGPT's block influence, unnormalised.

    A layer that barely changes the residual stream (cosine near 1) has influence near 0 and
    is the first to remove (Men et al. 2024, "ShortGPT", arXiv 2403.03853).
    """
    return ((1.0 - token_cosine(x_in, x_out)) * mask.double()).sum()


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """arccos(cos(a, b)) / pi per token, in [0, 1] (Gromov et al. 2024, arXiv 2403.17887)."""
    return torch.arccos(token_cosine(a, b).clamp(-1.0, 1.0)) / math.pi


def block_angular_sums(hidden: list[torch.Tensor], n: int, mask: torch.Tensor) -> torch.Tensor:
    """For every start l, the masked token sum of angular distance between h_l and h_{l+n}.

    ``hidden`` holds the L+1 residual states at layer boundaries (the input of layer 0 to the
    output of layer L-1); removing layers [l, l+n) is cheapest where h_l and h_{l+n} agree.
    """
    starts = len(hidden) - n
    m = mask.double()
    return torch.stack([(angular_distance(hidden[l], hidden[l + n]) * m).sum() for l in range(starts)])


def abs_mean_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of |x| over valid tokens ([B, T, d] -> [d]); Minitron's neuron importance."""
    return (x.abs().double() * mask.double().unsqueeze(-1)).sum(dim=(0, 1))


def sq_norm_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of x^2 over valid tokens ([B, T, d] -> [d]); Wanda's input norm, squared."""
    return (x.double().square() * mask.double().unsqueeze(-1)).sum(dim=(0, 1))


def head_norm_sum(x: torch.Tensor, mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per-head sum over valid tokens of the L2 norm of that head's attention output.

    ``x`` is the input of o_proj, [B, T, num_heads * head_dim] (Minitron, arXiv 2407.14679).
    """
    b, t, d = x.shape
    norms = x.double().view(b, t, num_heads, d // num_heads).norm(dim=-1)
    return (norms * mask.double().unsqueeze(-1)).sum(dim=(0, 1))


def gram_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """X^T X over valid tokens ([B, T, d] -> [d, d]), the sufficient statistic for reconstruction.

    The product runs in float64, slower as it is: MLP activations span orders of magnitude
    (massive activations), and a float32 Gram is indefinite enough that a refit measured
    against it reported negative reconstruction errors on SmolLM2-135M.
    """
    flat = x.reshape(-1, x.shape[-1])[mask.reshape(-1).bool()].double()
    return flat.T @ flat


def group_scores(head_scores: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Sum per-query-head scores into their key/value groups (GQA: consecutive heads share a group)."""
    return head_scores.view(num_kv_heads, -1).sum(-1)


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, sorted ascending so kept structure keeps its order."""
    return torch.topk(scores, k, sorted=False).indices.sort().values


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||: Wanda's weight importance (Sun et al. 2023, arXiv 2306.11695)."""
    return weight.abs().double() * input_norm.double().unsqueeze(0)


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask zeroing the lowest-scoring fraction of each output row (Wanda's per-row groups)."""
    _rows, cols = scores.shape
    n_zero = round(cols * sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if n_zero:
        idx = torch.topk(scores, n_zero, dim=1, largest=False).indices
        mask.scatter_(1, idx, False)
    return mask


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep mask with at most n non-zeros in every m consecutive inputs of a row (e.g. 2:4)."""
    rows, cols = scores.shape
    blocks = scores.reshape(rows, cols // m, m)
    idx = torch.topk(blocks, m - n, dim=-1, largest=False).indices
    mask = torch.ones_like(blocks, dtype=torch.bool)
    mask.scatter_(-1, idx, False)
    return mask.reshape(rows, cols)
