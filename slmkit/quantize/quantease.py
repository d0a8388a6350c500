"""QuantEase on one linear layer (Behdin et al. 2023, "QuantEase: Optimization-based Quantization for
Language Models"): cyclic coordinate descent on f(W_hat) = tr((W - W_hat) H (W - W_hat)^T), the
scales held fixed on the format's grid, started from GPTQ or RTN.

Rows are independent, so one coordinate step updates a whole input column j for every row at once.
With R = W - W_hat and P = R H, f restricted to column j is

    H_jj (w_hat_j - u_j)^2 + const,   u_j = w_j + sum_{k != j} R_k H_kj / H_jj = w_hat_j + P_j / H_jj,

a 1-D quadratic whose minimiser on the grid is the grid point nearest u_j (H_jj > 0). The current
w_hat_j is itself a grid point, so no step raises f. After the step P -= delta_j H_j: P is kept
incrementally in float32 (recomputed once per pass, which also gives f), on the transposed [in, out]
layout so a column is contiguous; columns are swept in batches, the columns after a batch updated by
one matmul per batch.

Optional scale refit (off by default): after a pass, each block's scale is set per row to the least-
squares optimum for the fixed codes (cyclically over blocks, so f still never rises) and rounded to
the stored dtype; rounding to the nearest representable value is optimal for a 1-D quadratic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from slmkit.quantize.grids import QuantizedWeight, inverse_scale, nearest_codes
from slmkit.quantize.reconstruction import check_hessian


@dataclass(frozen=True)
class QuantEaseStats:
    objectives: list[float]  # f before the first pass, then after each pass
    seconds: float


class _Problem:
    """f on the transposed layout: w, w_hat, q and p = H R^T are [in, out] float32; scales are [n_blocks, out]."""

    def __init__(self, w: torch.Tensor, h: torch.Tensor, init: QuantizedWeight, batch: int):
        self.grid = grid = init.grid
        self.w = w.detach().float().T.contiguous()
        self.w_hat = init.dequantize().T.contiguous()
        self.q = init.q.float().T.contiguous()
        self.h = h.detach().float().contiguous()
        self.p = torch.empty_like(self.w)
        self.s = init.scale.float().T.contiguous()
        zero = torch.full_like(self.s, float(grid.default_zero)) if init.zero is None else init.zero.float().T
        self.z = zero.contiguous()
        self.inv_s = inverse_scale(self.s)
        self.inv_diag = [1.0 / d if d > 0 else 0.0 for d in self.h.diagonal().tolist()]
        cols = self.w.shape[0]
        self.batches = [(c0, min(c0 + batch, cols)) for c0 in range(0, cols, batch)]
        # python tuples of row views, made once: indexing them costs nothing, a torch index op per column would
        self.w_hat_rows, self.q_rows, self.p_rows = self.w_hat.unbind(0), self.q.unbind(0), self.p.unbind(0)
        self.h_rows = [self.h[c0:c1, c0:c1].unbind(0) for c0, c1 in self.batches]

    def refresh(self) -> float:
        """P^T = H R^T from scratch (drops the drift of the incremental updates); returns f = sum(R^T * P^T)."""
        r = self.w - self.w_hat
        torch.matmul(self.h, r, out=self.p)
        return float(torch.sum(r * self.p, dtype=torch.float64))

    def sweep(self) -> None:
        """One cyclic pass over the live columns, updating w_hat and q; p is stale afterwards (refresh())."""
        g, delta = self.grid.block_size, torch.empty_like(self.w[: self.batches[0][1]])
        for (c0, c1), h_rows in zip(self.batches, self.h_rows):
            d_batch = delta[: c1 - c0].zero_()
            d_rows, p_batch = d_batch.unbind(0), self.p[c0:c1]
            for j in range(c0, c1):
                if self.inv_diag[j] == 0.0:  # a dead input does not enter f
                    continue
                b = j // g
                u = torch.add(self.w_hat_rows[j], self.p_rows[j], alpha=self.inv_diag[j])
                code = self.q_rows[j].copy_(nearest_codes(u, self.inv_s[b], self.z[b], self.grid))
                d = torch.sub((code - self.z[b]).mul_(self.s[b]), self.w_hat_rows[j], out=d_rows[j - c0])
                self.w_hat_rows[j].add_(d)
                p_batch.addr_(h_rows[j - c0], d, alpha=-1.0)  # H is symmetric: row j is column j
            # columns before c0 are done for this pass and p is refreshed after it: only the rest needs updating
            self.p[c1:].addmm_(self.h[c1:, c0:c1], d_batch, alpha=-1.0)

    def refit_scales(self) -> None:
        """Per row and block, s = argmin f for the fixed codes, rounded to the stored dtype; cyclic over blocks.

        Needs a fresh p and keeps it exact.
        """
        cols, g = self.w.shape[0], self.grid.block_size
        for b, c0 in enumerate(range(0, cols, g)):
            c1 = min(c0 + g, cols)
            v = self.q[c0:c1] - self.z[b]  # w_hat = s * v on this block
            curvature = (v * (self.h[c0:c1, c0:c1] @ v)).sum(0)
            step = torch.where(curvature > 0, (v * self.p[c0:c1]).sum(0) / curvature.clamp_min(1e-30), 0.0)
            s_new = (self.s[b] + step).to(self.grid.scale_dtype).float()
            d = v * (s_new - self.s[b])
            self.p.addmm_(self.h[:, c0:c1], d, alpha=-1.0)
            self.w_hat[c0:c1] += d
            self.s[b] = s_new
            self.inv_s[b] = inverse_scale(s_new)

    def result(self, zero: torch.Tensor | None) -> QuantizedWeight:
        q = self.q.T.contiguous().to(self.grid.q_dtype)
        return QuantizedWeight(q, self.s.T.contiguous().to(self.grid.scale_dtype), zero, self.grid)


def quantease(
    w: torch.Tensor,
    h: torch.Tensor,
    init: QuantizedWeight,
    *,
    passes: int = 3,
    refit_scales: bool = False,
    percdamp: float = 0.0,
    batch_columns: int = 128,
    name: str = "layer",
) -> tuple[QuantizedWeight, QuantEaseStats]:
    """Improve `init` (GPTQ or RTN on its grid) by `passes` cyclic coordinate-descent passes.

    percdamp > 0 minimises f + lam * ||W - W_hat||^2 with lam = percdamp * mean(diag H) instead (the
    objectives reported are then of H + lam I): a ridge toward W for when the calibration set has few
    tokens per input feature and f alone overfits it.
    """
    start = time.perf_counter()
    check_hessian(h, w.shape[1], name)
    if tuple(init.q.shape) != tuple(w.shape):
        raise ValueError(f"{name}: initial codes are {tuple(init.q.shape)}, weight is {tuple(w.shape)}")
    if percdamp > 0:
        h = h + percdamp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    problem = _Problem(w, h, init, batch_columns)
    objectives = [problem.refresh()]
    for _ in range(passes):
        problem.sweep()
        f = problem.refresh()
        if refit_scales:
            problem.refit_scales()
            f = problem.refresh()
        objectives.append(f)
    return problem.result(init.zero), QuantEaseStats(objectives, time.perf_counter() - start)
