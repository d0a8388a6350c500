"""Wanda sparsity: zero weights by |W| * ||X||, unstructured or N:M.

The model stays dense in storage and in compute: dense CPU runtimes (PyTorch, ONNX Runtime,
llama.cpp) run it at the same speed. Only kernels for 2:4 sparsity on GPUs gain speed.
"""

from __future__ import annotations

import torch

from slmkit.errors import InputError
from slmkit.prune import importance
from slmkit.prune.calibration import Needs, Stats
from slmkit.prune.config import SparsityConfig
from slmkit.prune.surgery import decoder_layers, projection

NO_SPEEDUP = (
    "sparsity zeroes weights but the model stays dense: dense CPU runtimes gain no speed and the "
    "files are no smaller; only GPU kernels for 2:4 sparsity can run it faster"
)


def parse_pattern(pattern: str) -> tuple[int, int]:
    n, m = pattern.split(":")
    return int(n), int(m)


def sparsify_weight(
    weight: torch.Tensor, input_norm: torch.Tensor, sparsity: float | None, pattern: str | None
):
    """The weight with Wanda's lowest-scoring entries set to zero (a new tensor)."""
    scores = importance.wanda_scores(weight, input_norm)
    if pattern is not None:
        mask = importance.n_m_mask(scores, *parse_pattern(pattern))
    else:
        mask = importance.unstructured_mask(scores, sparsity)
    return weight * mask.to(weight.dtype)


def resolve_keep(cfg: SparsityConfig, model_config: dict) -> int:
    """Checks N:M against the layer widths; returns 0 (nothing is removed structurally)."""
    if cfg.pattern is not None:
        m = parse_pattern(cfg.pattern)[1]
        widths = {model_config["hidden_size"], model_config["intermediate_size"]}
        heads = model_config["num_attention_heads"] * (
            model_config.get("head_dim") or model_config["hidden_size"] // model_config["num_attention_heads"]
        )
        bad = sorted(w for w in widths | {heads} if w % m)
        if bad:
            raise InputError(f"prune.pattern {cfg.pattern}: input widths {bad} are not multiples of {m}")
    return 0


def needs(cfg: SparsityConfig, model_config: dict, keep: int) -> Needs:
    return Needs(linear_norms=tuple(cfg.modules))


def apply(model, stats: Stats, cfg: SparsityConfig, keep: int, **_) -> dict:
    zeros = total = 0
    for i, layer in enumerate(decoder_layers(model)):
        for name in cfg.modules:
            # Wanda's groups are output rows, so a fused projection's part is sparsified on its own rows
            key, linear, rows = projection(layer, name, model.config)
            weight = linear.weight.data
            part = weight if rows is None else weight[rows]
            norm = stats.linear_sq[f"{i}.{key}"].sqrt()
            new = sparsify_weight(part, norm.to(weight.device), cfg.sparsity, cfg.pattern)
            if rows is None:
                weight.copy_(new)
            else:
                weight[rows] = new
            zeros += int((new == 0).sum())
            total += new.numel()
    return {
        "zeroed_weights": zeros,
        "sparsified_weights": total,
        "achieved_sparsity": round(zeros / max(total, 1), 6),
    }
