"""Parameter counts from a config alone, and keep counts that meet a ``target_params`` budget.

Counting from config.json (not from weights) is what lets ``--dry-run`` answer instantly.
"""

from __future__ import annotations

from collections.abc import Callable

from slmkit.errors import InputError
from slmkit.prune.surgery import check_supported

TOLERANCE = 0.02  # the budget is met when the count is within 2% of target_params
_FOUR_NORMS = ("gemma2", "gemma3_text")  # pre/post norms around both attention and MLP
_QK_NORM = ("qwen3", "gemma3_text")


def config_dict(model_config) -> dict:
    return model_config if isinstance(model_config, dict) else model_config.to_dict()


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def _attention_params(cfg: dict) -> int:
    h, hd = cfg["hidden_size"], _head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    n = 2 * h * q + 2 * h * kv
    kind = cfg["model_type"]
    if kind == "qwen2":  # qwen2 always has q/k/v biases and no o bias
        n += q + 2 * kv
    elif cfg.get("attention_bias"):
        n += q + 2 * kv + h
    if kind in _QK_NORM:
        n += 2 * hd
    return n


def _mlp_params(cfg: dict) -> int:
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    return 3 * h * ff + ((2 * ff + h) if cfg.get("mlp_bias") else 0)


def param_count(model_config) -> dict[str, int]:
    """Parameters per component (embedding, attention, mlp, norm, lm_head) and their total."""
    cfg = config_dict(model_config)
    check_supported(cfg)
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    norms_per_layer = 4 if cfg["model_type"] in _FOUR_NORMS else 2
    counts = {
        "embedding": vocab * h,
        "attention": layers * _attention_params(cfg),
        "mlp": layers * _mlp_params(cfg),
        "norm": layers * norms_per_layer * h + h,
        "lm_head": 0 if cfg.get("tie_word_embeddings", False) else vocab * h,
    }
    counts["total"] = sum(counts.values())
    return counts


# dimension -> (config key, smallest value, largest value from cfg)
DIMENSIONS: dict[str, tuple[str, Callable[[dict], int]]] = {
    "layers": ("num_hidden_layers", lambda c: c["num_hidden_layers"]),
    "mlp_neurons": ("intermediate_size", lambda c: c["intermediate_size"]),
    "kv_groups": ("num_key_value_heads", lambda c: c["num_key_value_heads"]),
}


def resized(model_config, dimension: str, keep: int) -> dict:
    """The config dict after keeping ``keep`` units of ``dimension`` in every layer."""
    cfg = dict(config_dict(model_config))
    if dimension == "layers":
        cfg["num_hidden_layers"] = keep
        if cfg.get("layer_types"):
            cfg["layer_types"] = cfg["layer_types"][:keep]  # count only; the stage slices the real ones
    elif dimension == "mlp_neurons":
        cfg["intermediate_size"] = keep
    elif dimension == "kv_groups":
        per_group = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
        cfg["head_dim"] = _head_dim(cfg)
        cfg["num_key_value_heads"] = keep
        cfg["num_attention_heads"] = keep * per_group
    else:
        raise ValueError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
    return cfg


def solve_keep(model_config, dimension: str, target: int, multiple_of: int = 1) -> int:
    """The keep count of ``dimension`` whose total is closest to ``target``, within 2% or InputError."""
    cfg = config_dict(model_config)
    key, upper = DIMENSIONS[dimension]
    options = [k for k in range(1, upper(cfg) + 1) if k % multiple_of == 0]
    if not options:
        raise InputError(
            f"prune: no {dimension} count is a multiple of {multiple_of} (the model has {upper(cfg)})"
        )
    totals = {k: param_count(resized(cfg, dimension, k))["total"] for k in options}
    best = min(options, key=lambda k: abs(totals[k] - target))
    if abs(totals[best] - target) > TOLERANCE * target:
        lo, hi = totals[options[0]], totals[options[-1]]
        raise InputError(
            f"prune: target_params {target:,} is unreachable by pruning {dimension} ({key}): "
            f"reachable totals run from {lo:,} to {hi:,}, and the closest is {totals[best]:,} "
            f"({key}={best}), more than {TOLERANCE:.0%} away"
        )
    return best
