"""Quantization-aware distillation: the student's linear weights are fake-quantized on the target
format's grid in every forward pass, with straight-through gradients.

The forward uses exactly the weights the export will hold: round-to-nearest on the format's own
grid (``slmkit.quantize.grids.rtn``, bit-exact with onnxruntime's and gguf's quantizers), so the
distilled student is trained for its int4 form and the export (with ``calibration: rtn``)
quantizes without further loss. The latent fp32 weights are what is saved: rounding them again
at export time gives the same codes the training forward used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from slmkit.quantize.grids import Grid, grid_for, rtn


class FakeQuant(nn.Module):
    """A parametrization: weight -> its dequantized RTN codes, gradient passed straight through."""

    def __init__(self, grid: Grid):
        super().__init__()
        self.grid = grid

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            w_hat = rtn(w.detach().float(), self.grid).dequantize().to(w.dtype)
        return w + (w_hat - w).detach()


def target_grid(cfg) -> Grid:
    """The grid of ``distill.quant_aware`` ({bits, block_size, format})."""
    if cfg.format == "gguf":
        return grid_for("gguf", cfg.bits, 32)
    return grid_for("onnx", cfg.bits, cfg.block_size, symmetric=True)


def decoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linears of the decoder layers (the token embedding and the output head stay as they are)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}"}


def apply(model: nn.Module, grid: Grid) -> list[str]:
    """Fake-quantize every decoder linear's weight whose width the grid can block; returns their names."""
    done = []
    for name, linear in decoder_linears(model).items():
        if grid.partial_blocks or linear.in_features % grid.block_size == 0:
            parametrize.register_parametrization(linear, "weight", FakeQuant(grid))
            done.append(name)
    return done


def remove(model: nn.Module) -> None:
    """Back to plain linears holding the latent weights (what the export rounds)."""
    for linear in decoder_linears(model).values():
        if parametrize.is_parametrized(linear, "weight"):
            parametrize.remove_parametrizations(linear, "weight", leave_parametrized=False)
