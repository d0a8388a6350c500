"""Codes of a ``QuantizedWeight`` as the bytes each format stores, and back (pure numpy).

- onnxruntime MatMulNBits: ``B`` uint8 [N, blocks, block_size * bits / 8] (4-bit: two codes per
  byte, the even index in the low nibble), ``scales`` [N, blocks] in the scale dtype, and for
  asymmetric grids ``zero_points`` uint8 [N, ceil(blocks * bits / 8)] (4-bit: two per byte).
  A partial last block is padded with code 0 (the padding multiplies nothing: K is the true width).
- GGUF Q4_0: per block of 32, an fp16 ``d`` then 16 bytes whose low nibbles hold codes 0..15 and
  high nibbles codes 16..31 (ggml's block_q4_0); Q8_0: fp16 ``d`` then 32 int8 codes (block_q8_0).

Unpacking exists so tests (and users) can read a written file back and check that it holds
exactly the quantizer's codes.
"""

from __future__ import annotations

import numpy as np
import torch

from slmkit.quantize.grids import Format, Grid, QuantizedWeight, n_blocks


def _nibbles(a: np.ndarray) -> np.ndarray:
    """Pairs along the last axis into bytes: even index low, odd index high."""
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), a.dtype)], axis=-1)
    return (a[..., 0::2] & 15) | ((a[..., 1::2] & 15) << 4)


def _unnibble(b: np.ndarray, count: int) -> np.ndarray:
    return np.stack([b & 15, b >> 4], axis=-1).reshape(*b.shape[:-1], -1)[..., :count]


def onnx_pack(qw: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(B, scales, zero_points or None) of a MatMulNBits node for ``qw`` ([N = out, K = in])."""
    grid = qw.grid
    if grid.format is not Format.ONNX:
        raise ValueError(f"{grid.name}: not an onnx grid")
    out, cols = qw.q.shape
    nb = n_blocks(cols, grid)
    q = np.zeros((out, nb * grid.block_size), np.uint8)
    q[:, :cols] = qw.q.numpy().astype(np.uint8)
    q = q.reshape(out, nb, grid.block_size)
    b = _nibbles(q) if grid.bits == 4 else q
    scales = qw.scale.numpy()  # already in the grid's stored dtype (float32 or float16)
    zero = None
    if qw.zero is not None:
        z = qw.zero.numpy().astype(np.uint8)
        zero = _nibbles(z) if grid.bits == 4 else z
    return np.ascontiguousarray(b), np.ascontiguousarray(scales), None if zero is None else np.ascontiguousarray(zero)


def onnx_unpack(b: np.ndarray, scales: np.ndarray, zero: np.ndarray | None, grid: Grid, k: int, n: int
                ) -> QuantizedWeight:
    """The codes a MatMulNBits node holds, as a ``QuantizedWeight`` on ``grid`` ([n, k])."""
    nb = n_blocks(k, grid)
    b = b.reshape(n, nb, -1)
    q = _unnibble(b, grid.block_size) if grid.bits == 4 else b
    q = q.reshape(n, nb * grid.block_size)[:, :k]
    z = None
    if zero is not None:
        zero = zero.reshape(n, -1)
        z = torch.from_numpy((_unnibble(zero, nb) if grid.bits == 4 else zero[:, :nb]).copy())
    s = torch.from_numpy(np.asarray(scales).reshape(n, nb).copy()).to(grid.scale_dtype)
    return QuantizedWeight(torch.from_numpy(q.astype(np.uint8).copy()), s, z, grid)


def gguf_pack(qw: QuantizedWeight) -> np.ndarray:
    """uint8 [out, blocks * bytes per block] of a Q4_0 or Q8_0 tensor, as gguf's writer stores it."""
    grid = qw.grid
    if grid.format is not Format.GGUF:
        raise ValueError(f"{grid.name}: not a gguf grid")
    out, cols = qw.q.shape
    nb = cols // grid.block_size
    d = qw.scale.numpy().astype(np.float16).reshape(out, nb, 1).view(np.uint8)  # 2 bytes each
    q = qw.q.numpy().reshape(out, nb, grid.block_size)
    if grid.bits == 4:
        half = grid.block_size // 2
        qs = (q[..., :half].astype(np.uint8) & 15) | (q[..., half:].astype(np.uint8) << 4)
    else:
        qs = q.astype(np.int8).view(np.uint8)
    return np.ascontiguousarray(np.concatenate([d, qs], axis=-1).reshape(out, -1))


def gguf_unpack(data: np.ndarray, grid: Grid, cols: int) -> QuantizedWeight:
    """The codes and fp16 scales of Q4_0 / Q8_0 bytes ([out, blocks * bytes per block])."""
    nb = cols // grid.block_size
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, nb, 2 + (grid.block_size * grid.bits) // 8)
    d = blocks[..., :2].copy().view(np.float16).reshape(-1, nb)
    qs = blocks[..., 2:]
    if grid.bits == 4:
        q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.uint8)
    else:
        q = qs.copy().view(np.int8)
    out = blocks.shape[0]
    return QuantizedWeight(torch.from_numpy(q.reshape(out, cols).copy()), torch.from_numpy(d.copy()), None, grid)
