"""GPTQ on one linear layer (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", Algorithm 1), on a format's grid from :mod:`grids`.

Columns are quantized left to right; each one's rounding error is spread over the columns not yet
quantized through the upper Cholesky factor of H^-1 (H damped by percdamp * mean diag), and the
updates are applied lazily in batches of `block_columns`. Dead inputs (diag H = 0) are zeroed and
their diagonal set to 1, as in the reference.

Scales. By default a block's scale is fixed, as in GPTQ, from the RTN of the current (already
updated) weights when the pass reaches the block's first column. Runtimes group by contiguous input
columns and store no column permutation, so with act_order the scales are "static groups": fixed up
front from the RTN of the unpermuted weights, and column j keeps the scale of block j // block_size
whatever position the permutation gives it. static_groups=True does the same without act_order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from slmkit.quantize.grids import (
    Grid,
    QuantizedWeight,
    inverse_scale,
    n_blocks,
    nearest_codes,
    per_column,
    rtn,
    rtn_scales,
)
from slmkit.quantize.reconstruction import check_hessian, objective

# (column j, the not yet quantized rows of the current batch [rest, out]) -> scale, 1/scale, zero rows [out]
ColumnParams = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class GptqStats:
    objective: float  # tr((W - W_hat) H (W - W_hat)^T) on the undamped H
    rtn_objective: float  # the same for round-to-nearest on the same grid
    dead_columns: int
    seconds: float


def upper_inverse_cholesky(h: torch.Tensor, percdamp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor U of (H + percdamp * mean(diag H) * I)^-1 = U^T U, float32.

    With J the reversal permutation and J H J = L L^T, U = J L^-1 J: one Cholesky and one triangular
    inverse instead of the reference's Cholesky, cholesky_inverse and second Cholesky. Factored in
    float32; an H that float32 cannot factor is retried in float64 before giving up.
    """
    h = h.double().clone()
    h.diagonal().add_(percdamp * float(h.diagonal().mean()))
    flipped = torch.flip(h, (0, 1))
    for dtype in (torch.float32, torch.float64):
        lower, info = torch.linalg.cholesky_ex(flipped.to(dtype))
        if int(info) == 0:
            eye = torch.eye(h.shape[0], dtype=dtype, device=h.device)
            inverse = torch.linalg.solve_triangular(lower, eye, upper=False)
            return torch.flip(inverse, (0, 1)).float()
    raise ValueError(f"{name}: Hessian is not positive definite after dampening {percdamp}; raise percdamp")


def gptq_columns(
    wt: torch.Tensor, hinv: torch.Tensor, grid: Grid, lazy: int, params: ColumnParams
) -> torch.Tensor:
    """The GPTQ pass on the transposed weight wt [in, out] (updated in place); returns codes [in, out].

    Transposed so that one input column is one contiguous row; W[:, i:] -= e h^T becomes Wt[i:] -= h e^T.
    """
    cols = wt.shape[0]
    q = torch.empty_like(wt)
    for i1 in range(0, cols, lazy):
        i2 = min(i1 + lazy, cols)
        w1 = wt[i1:i2].clone()
        err = torch.empty_like(w1)
        rows, errs, qs = w1.unbind(0), err.unbind(0), q[i1:i2].unbind(0)
        hrows = hinv[i1:i2, i1:i2].unbind(0)
        inv_diag = (1.0 / hinv.diagonal()[i1:i2]).tolist()
        for i in range(i2 - i1):
            s, inv_s, z = params(i1 + i, w1[i:])
            code = qs[i].copy_(nearest_codes(rows[i], inv_s, z, grid))
            torch.sub(rows[i], (code - z).mul_(s), out=errs[i]).mul_(inv_diag[i])
            w1[i:].addr_(hrows[i][i:], errs[i], alpha=-1.0)
        wt[i2:].addmm_(hinv[i1:i2, i2:].T, err, alpha=-1.0)
    return q


class GroupScales:
    """GPTQ's scales: block b's from the RTN of the updated weights when the pass reaches its first column."""

    def __init__(self, out: int, cols: int, grid: Grid, device: torch.device):
        self.grid = grid
        self.scale = torch.empty(out, n_blocks(cols, grid), dtype=grid.scale_dtype, device=device)
        self.zero = None if grid.symmetric else torch.empty_like(self.scale, dtype=torch.uint8)
        self.rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, j: int, rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.grid.block_size
        if j % g == 0:  # rest holds the whole block: a lazy batch is a multiple of it
            s, z = rtn_scales(rest[:g].T, self.grid)
            self.scale[:, j // g] = s[:, 0]
            if z is not None:
                self.zero[:, j // g] = z[:, 0]
            zero = (
                torch.full_like(s[:, 0], self.grid.default_zero, dtype=torch.float32)
                if z is None
                else z[:, 0]
            )
            self.rows = (s[:, 0].float(), inverse_scale(s[:, 0]), zero.float())
        return self.rows


def _dynamic(wt: torch.Tensor, hinv: torch.Tensor, grid: Grid, lazy: int) -> QuantizedWeight:
    params = GroupScales(wt.shape[1], wt.shape[0], grid, wt.device)
    q = gptq_columns(wt, hinv, grid, lazy, params)
    return QuantizedWeight(q.T.contiguous().to(grid.q_dtype), params.scale, params.zero, grid)


def _static(
    wt: torch.Tensor, hinv: torch.Tensor, grid: Grid, lazy: int, perm: torch.Tensor | None
) -> QuantizedWeight:
    scale, zero = rtn_scales(wt.T, grid)
    order = torch.arange(wt.shape[0], device=wt.device) if perm is None else perm
    s_t = per_column(scale.float(), grid, wt.shape[0]).T[order].contiguous()
    if zero is None:
        z_t = torch.full_like(s_t, float(grid.default_zero))
    else:
        z_t = per_column(zero.float(), grid, wt.shape[0]).T[order].contiguous()
    rows = list(zip(s_t.unbind(0), inverse_scale(s_t).unbind(0), z_t.unbind(0)))
    q = gptq_columns(wt[order].contiguous(), hinv, grid, lazy, lambda j, rest: rows[j])
    q = q[torch.argsort(order)]
    return QuantizedWeight(q.T.contiguous().to(grid.q_dtype), scale, zero, grid)


def gptq(
    w: torch.Tensor,
    h: torch.Tensor,
    grid: Grid,
    *,
    name: str = "layer",
    percdamp: float = 0.01,
    block_columns: int = 128,
    act_order: bool = False,
    static_groups: bool = False,
) -> tuple[QuantizedWeight, GptqStats]:
    """Quantize w [out, in] on `grid` minimising tr((W - W_hat) H (W - W_hat)^T)."""
    start = time.perf_counter()
    check_hessian(h, w.shape[1], name)
    n_blocks(w.shape[1], grid)
    w0 = w.detach().float()
    h64 = h.detach().double().clone()
    dead = h64.diagonal() == 0
    h64[dead, dead] = 1.0
    work = w0.T.clone(memory_format=torch.contiguous_format)  # [in, out], ours to update
    work[dead] = 0.0
    perm = torch.argsort(h64.diagonal(), descending=True) if act_order else None
    hinv = upper_inverse_cholesky(h64 if perm is None else h64[perm][:, perm], percdamp, name)
    lazy = grid.block_size * max(1, block_columns // grid.block_size)  # a batch never splits a block
    if act_order or static_groups:
        qw = _static(work, hinv, grid, lazy, perm)
    else:
        qw = _dynamic(work, hinv, grid, lazy)
    stats = GptqStats(
        objective(w0, qw.dequantize(), h, torch.float32),
        objective(w0, rtn(w0, grid).dequantize(), h, torch.float32),
        int(dead.sum()),
        time.perf_counter() - start,
    )
    return qw, stats
