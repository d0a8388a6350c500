"""Blockwise integer grids of the formats slmkit writes, computed the way each runtime computes them.

A weight [out_features, in_features] (torch nn.Linear layout) is cut into blocks of `block_size`
consecutive input columns; each (row, block) has one scale s and, on asymmetric grids, one integer
zero point z; a code q stands for (q - z) * s. The calibrated quantizers (GPTQ, QuantEase) choose
the codes on exactly this grid, so what they optimise is what the runtime multiplies by.

Reference quantizers reproduced here (bit-exact, see tests/unit/test_quantize_calibrated.py):

- onnx (MatMulNBits): MLAS `BlockwiseQuantizer` in onnxruntime/core/mlas/lib/q4_dq.cpp, which
  `matmul_nbits_quantizer.py` calls through `quantize_matmul_{4,8}bits`. Symmetric: m = the block's
  max or min, whichever has the larger magnitude (ties: min), s = -m / 2^(bits-1), no zero point
  stored (the runtime's default is 2^(bits-1)); the value of largest magnitude lands on code 0.
  Asymmetric: range [min(min, 0), max(max, 0)] over 2^bits - 1 steps, z = roundf(-min / s).
  Codes: clamp(roundf(w * (1/s) + z)), with the scale as stored.
- gguf Q4_0 / Q8_0: gguf-py `quants.py` (same as ggml's quantize_row_q4_0_ref / q8_0_ref).
  Q4_0: d = (signed value of largest magnitude) / -8, q = trunc(w * (1/d) + 8.5) clamped to [0, 15].
  Q8_0: d = amax / 127, q = roundf(w * (1/d)). Both quantize with the float32 d and store it as fp16.
- compressed-tensors (vLLM GPTQ/Marlin, symmetric): calculate_qparams' s = amax / ((qmax - qmin) / 2),
  i.e. amax / 7.5 for int4, at least float32 eps, here computed in float32 and rounded once to the
  scale dtype; q = clamp(round_half_even(w / s), -8, 7) with the stored scale (forward._quantize).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

import torch


class Format(str, Enum):
    ONNX = "onnx"
    GGUF = "gguf"
    COMPRESSED_TENSORS = "compressed-tensors"


class Rounding(str, Enum):
    HALF_AWAY = "half_away"  # C roundf: onnxruntime, ggml's Q8_0
    HALF_EVEN = "half_even"  # torch.round: compressed-tensors
    HALF_UP = "half_up"  # ggml Q4_0: trunc(x + z + 0.5) with the sum rounded to float32 first


@dataclass(frozen=True)
class Grid:
    """One format's integer grid: codes in [qmin, qmax], value (q - zero) * scale."""

    name: str
    format: Format
    bits: int
    block_size: int
    symmetric: bool
    scale_dtype: torch.dtype
    qmin: int
    qmax: int
    default_zero: int  # used when no zero point is stored (symmetric grids)
    q_dtype: torch.dtype
    rounding: Rounding
    reciprocal: bool  # the reference multiplies by fl32(1/s) instead of dividing by s
    partial_blocks: bool  # in_features need not be a multiple of block_size
    rtn_with_float32_scale: bool  # the reference RTN rounds with the scale before storing it


ONNX_BLOCKS = (16, 32, 64, 128, 256)
COMPRESSED_GROUPS = (32, 64, 128)


def grid_for(
    format: Format | str,
    bits: int,
    block_size: int,
    symmetric: bool = True,
    scale_dtype: torch.dtype | None = None,
) -> Grid:
    """The grid of `format`; a ValueError names what is allowed when the combination does not exist.

    scale_dtype defaults to float32 for onnx (fp32 graphs) and float16 for gguf and compressed-tensors.
    """
    fmt = Format(format)
    if fmt is Format.ONNX:
        return _onnx_grid(bits, block_size, symmetric, scale_dtype or torch.float32)
    if fmt is Format.GGUF:
        return _gguf_grid(bits, block_size, symmetric, scale_dtype or torch.float16)
    return _compressed_grid(bits, block_size, symmetric, scale_dtype or torch.float16)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _onnx_grid(bits: int, block: int, symmetric: bool, scale_dtype: torch.dtype) -> Grid:
    _check(bits in (4, 8), f"onnx MatMulNBits: bits must be 4 or 8, not {bits}")
    _check(block in ONNX_BLOCKS, f"onnx MatMulNBits: block_size must be one of {ONNX_BLOCKS}, not {block}")
    _check(
        scale_dtype in (torch.float32, torch.float16),
        f"onnx MatMulNBits: scales are float32 (fp32 graphs) or float16 (fp16 graphs), not {scale_dtype}",
    )
    kind = "sym" if symmetric else "asym"
    return Grid(
        name=f"onnx-int{bits}-{kind}-b{block}",
        format=Format.ONNX,
        bits=bits,
        block_size=block,
        symmetric=symmetric,
        scale_dtype=scale_dtype,
        qmin=0,
        qmax=2**bits - 1,
        default_zero=2 ** (bits - 1),
        q_dtype=torch.uint8,
        rounding=Rounding.HALF_AWAY,
        reciprocal=True,
        partial_blocks=True,
        rtn_with_float32_scale=False,
    )


def _gguf_grid(bits: int, block: int, symmetric: bool, scale_dtype: torch.dtype) -> Grid:
    _check(bits in (4, 8), f"gguf: bits must be 4 (Q4_0) or 8 (Q8_0), not {bits}")
    _check(block == 32, f"gguf Q4_0/Q8_0: block_size is 32, not {block}")
    _check(symmetric, "gguf Q4_0/Q8_0 are symmetric (no zero point); asymmetric Q4_1 is not supported")
    _check(scale_dtype == torch.float16, f"gguf Q4_0/Q8_0 store fp16 scales, not {scale_dtype}")
    q4_0 = Grid(
        name="gguf-Q4_0",
        format=Format.GGUF,
        bits=4,
        block_size=32,
        symmetric=True,
        scale_dtype=torch.float16,
        qmin=0,
        qmax=15,
        default_zero=8,
        q_dtype=torch.uint8,
        rounding=Rounding.HALF_UP,
        reciprocal=True,
        partial_blocks=False,
        rtn_with_float32_scale=True,
    )
    if bits == 4:
        return q4_0
    # ggml's reference never emits -128 (d = amax / 127); keep its range so SIMD kernels see what they expect
    return replace(
        q4_0, name="gguf-Q8_0", bits=8, qmin=-127, qmax=127, default_zero=0, q_dtype=torch.int8,
        rounding=Rounding.HALF_AWAY,
    )  # fmt: skip


def _compressed_grid(bits: int, group: int, symmetric: bool, scale_dtype: torch.dtype) -> Grid:
    _check(bits in (4, 8), f"compressed-tensors: bits must be 4 or 8, not {bits}")
    _check(group in COMPRESSED_GROUPS, f"compressed-tensors: group size must be one of {COMPRESSED_GROUPS}")
    _check(symmetric, "compressed-tensors for vLLM GPTQ kernels: symmetric only (no zero point)")
    _check(
        scale_dtype in (torch.float16, torch.bfloat16),
        f"compressed-tensors: scales are float16 or bfloat16, not {scale_dtype}",
    )
    half = 2 ** (bits - 1)
    return Grid(
        name=f"compressed-tensors-int{bits}-g{group}",
        format=Format.COMPRESSED_TENSORS,
        bits=bits,
        block_size=group,
        symmetric=True,
        scale_dtype=scale_dtype,
        qmin=-half,
        qmax=half - 1,
        default_zero=0,
        q_dtype=torch.int8,
        rounding=Rounding.HALF_EVEN,
        reciprocal=False,
        partial_blocks=False,
        rtn_with_float32_scale=False,
    )


def n_blocks(in_features: int, grid: Grid) -> int:
    """Blocks per row; refuses a partial last block where the format has none."""
    if in_features % grid.block_size and not grid.partial_blocks:
        raise ValueError(
            f"{grid.name}: in_features {in_features} is not a multiple of {grid.block_size}; "
            "this format has no partial blocks (keep the tensor in 16-bit or pick another block size)"
        )
    return -(-in_features // grid.block_size)


def _blocks(w: torch.Tensor, grid: Grid) -> torch.Tensor:
    """[out, in] -> [out, n_blocks, block], zero padded: zeros change no scale (every range holds 0)."""
    out, cols = w.shape
    nb = n_blocks(cols, grid)
    padded = torch.nn.functional.pad(w, (0, nb * grid.block_size - cols))
    return padded.reshape(out, nb, grid.block_size)


def per_column(t: torch.Tensor, grid: Grid, in_features: int) -> torch.Tensor:
    """Per-block [out, n_blocks] -> per-column [out, in_features]."""
    return t.repeat_interleave(grid.block_size, dim=1)[:, :in_features]


def _signed_amax(b: torch.Tensor, ties_to_min: bool) -> torch.Tensor:
    """The signed value of largest magnitude per block."""
    if ties_to_min:  # MLAS: fabsf(max) > fabsf(min) ? max : min
        mx, mn = b.amax(-1), b.amin(-1)
        return torch.where(mx.abs() > mn.abs(), mx, mn)
    idx = b.abs().argmax(-1, keepdim=True)  # gguf-py: the first index of the largest magnitude
    return b.gather(-1, idx).squeeze(-1)


def _onnx_asym(b: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    mn = b.amin(-1).clamp(max=0.0)
    mx = b.amax(-1).clamp(min=0.0)
    s = (mx - mn) / float(grid.qmax)
    zf = torch.where(s != 0, 0.0 - mn / torch.where(s != 0, s, 1.0), mn)
    zero = _round(zf.clamp(0.0, float(grid.qmax)), Rounding.HALF_AWAY).to(torch.uint8)
    return s, zero


def reference_scales(w: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 scale (before storing) and zero point the format's own quantizer computes."""
    b = _blocks(w.detach().float(), grid)
    if grid.format is Format.ONNX and not grid.symmetric:
        return _onnx_asym(b, grid)
    if grid.format is Format.ONNX:
        return -_signed_amax(b, ties_to_min=True) / float(grid.default_zero), None
    if grid.name == "gguf-Q4_0":
        return _signed_amax(b, ties_to_min=False) / -8.0, None
    if grid.name == "gguf-Q8_0":
        return b.abs().amax(-1) / 127.0, None
    amax = b.abs().amax(-1)  # compressed-tensors: max(|min(min, 0)|, max(max, 0))
    return (amax / ((grid.qmax - grid.qmin) / 2)).clamp(min=torch.finfo(torch.float32).eps), None


def rtn_scales(w: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-block scale [out, n_blocks] in the stored dtype, and zero point (uint8) or None."""
    scale, zero = reference_scales(w, grid)
    return scale.to(grid.scale_dtype), zero


def _round_half_away(y: torch.Tensor) -> torch.Tensor:
    # exact in float32 (as gguf-py's np_roundf): floor(|y| + 0.5) would round 0.49999997 up
    a = y.abs()
    f = a.floor()
    return torch.copysign(f + (2 * (a - f)).floor(), y)


def _round(y: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    if rounding is Rounding.HALF_EVEN:
        return torch.round(y)
    return _round_half_away(y)


def inverse_scale(scale: torch.Tensor) -> torch.Tensor:
    """fl32(1 / s), 0 where s is 0 (an all-zero block: every code is the zero point)."""
    scale = scale.float()
    return torch.where(scale != 0, 1.0 / torch.where(scale != 0, scale, 1.0), 0.0)


def nearest_codes(u: torch.Tensor, inv_scale: torch.Tensor, zero: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Codes of the grid points nearest u: what the calibrated passes round with, in three torch ops.

    It multiplies by 1/s and sends ties to even on every grid, unlike codes(), which follows each
    format's own arithmetic; the two can differ only on a tie (at float32 resolution), which is equally
    near both points, so no reconstruction error changes, and rtn() keeps the format's rule.
    """
    return torch.addcmul(zero, u, inv_scale).round_().clamp_(grid.qmin, grid.qmax)


def codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | float, grid: Grid) -> torch.Tensor:
    """Codes (float32) of w for broadcastable per-element scale and zero, in the format's own arithmetic."""
    w = w.float()
    scale = scale.float()
    a = w * inverse_scale(scale) if grid.reciprocal else w / scale
    if grid.rounding is Rounding.HALF_UP:
        q = torch.floor(a + (zero + 0.5))  # one float32 add, as trunc(x * id + 8.5)
    else:
        q = _round(a + zero, grid.rounding)
    return q.clamp(grid.qmin, grid.qmax)


def _zero_columns(zero: torch.Tensor | None, grid: Grid, cols: int) -> torch.Tensor | float:
    return float(grid.default_zero) if zero is None else per_column(zero.float(), grid, cols)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, grid: Grid) -> torch.Tensor:
    """Codes q [out, in] (grid.q_dtype) of w for per-block scale and zero, clamped to the grid."""
    cols = w.shape[1]
    q = codes(w, per_column(scale, grid, cols), _zero_columns(zero, grid, cols), grid)
    return q.to(grid.q_dtype)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, grid: Grid) -> torch.Tensor:
    """(q - zero) * scale in float32, as the runtime computes it, [out, in]."""
    cols = q.shape[1]
    return (q.float() - _zero_columns(zero, grid, cols)) * per_column(scale.float(), grid, cols)


@dataclass(frozen=True)
class QuantizedWeight:
    """Codes q [out, in], scale [out, n_blocks] (grid.scale_dtype), zero [out, n_blocks] uint8 or None."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    grid: Grid

    def __post_init__(self) -> None:
        out, cols = self.q.shape
        expected = (out, n_blocks(cols, self.grid))
        if tuple(self.scale.shape) != expected or (
            self.zero is not None and self.zero.shape != self.scale.shape
        ):
            raise ValueError(f"{self.grid.name}: scale/zero must be {expected} for q {tuple(self.q.shape)}")
        if self.grid.symmetric != (self.zero is None):
            raise ValueError(f"{self.grid.name}: a zero point is stored exactly when the grid is asymmetric")

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.q, self.scale, self.zero, self.grid)


def rtn(w: torch.Tensor, grid: Grid) -> QuantizedWeight:
    """Round to nearest, bit-exact with the format's own quantizer."""
    scale, zero = reference_scales(w, grid)
    stored = scale.to(grid.scale_dtype)
    # ggml rounds with the float32 d and stores it as fp16 afterwards; the others quantize with the stored scale
    q = quantize(w, scale if grid.rtn_with_float32_scale else stored, zero, grid)
    return QuantizedWeight(q, stored, zero, grid)
