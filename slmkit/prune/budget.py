"""Parameter counts from a config alone, and keep counts that meet a ``target_params`` budget.

Counting from config.json (not from weights) is what lets ``--dry-run`` answer instantly.
"""

from __future__ import annotations

from collections.abc import Callable

from slmkit.errors import InputError
from slmkit.prune.archs import LAYOUTS, Layout, check_method, kept_layer_config

TOLERANCE = 0.02  # the budget is met when the count is within 2% of target_params


def config_dict(model_config) -> dict:
    if isinstance(model_config, dict):
        return model_config
    cfg = model_config.to_dict()
    # GPT-2 style configs store the layer count as n_layer; the attribute map names it for us
    cfg.setdefault("num_hidden_layers", model_config.num_hidden_layers)
    return cfg


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def _flag(cfg: dict, key: str | None) -> bool:
    return key == "always" or bool(key and cfg.get(key))


def _attention_params(cfg: dict, layout: Layout) -> int:
    h, hd = cfg["hidden_size"], _head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    n = 2 * h * q + 2 * h * kv
    n += (q + 2 * kv) * _flag(cfg, layout.qkv_bias) + h * _flag(cfg, layout.o_bias)
    if layout.qk_norm == "head":
        n += 2 * hd
    elif layout.qk_norm == "width":
        n += q + kv
    if cfg.get("qk_layernorm"):  # StableLM: one LayerNorm (no bias) per query head and per kv head
        n += q + kv
    return n


def _mlp_params(cfg: dict) -> int:
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    return 3 * h * ff + ((2 * ff + h) if cfg.get("mlp_bias") else 0)


def _norms_per_layer(cfg: dict, layout: Layout) -> int:
    # StableLM's parallel residual feeds attention and MLP from one norm
    return 1 if cfg.get("use_parallel_residual") else layout.norms


def param_count(model_config) -> dict[str, int]:
    """Parameters per component (embedding, attention, mlp, norm, lm_head) and their total.

    Counted from the config: exactly for the families of ``archs.LAYOUTS``; any other
    decoder-only model (which only depth pruning takes) is built on the meta device and counted.
    """
    cfg = config_dict(model_config)
    check_method(cfg, "depth")
    layout = LAYOUTS.get(cfg["model_type"])
    if layout is None:
        return _meta_count(cfg)
    h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    per_norm = 2 * h if layout.norm_bias else h
    counts = {
        "embedding": vocab * h,
        "attention": layers * _attention_params(cfg, layout),
        "mlp": layers * _mlp_params(cfg),
        "norm": layers * _norms_per_layer(cfg, layout) * per_norm + per_norm,
        "lm_head": 0 if cfg.get("tie_word_embeddings", False) else vocab * h,
    }
    counts["total"] = sum(counts.values())
    return counts


# parameter name fragments -> component, for models counted on the meta device (first match wins)
_COMPONENTS = (("lm_head", "lm_head"), ("embed", "embedding"), ("wte", "embedding"), ("wpe", "embedding"),
               ("norm", "norm"), ("ln_", "norm"), ("attn", "attention"), ("attention", "attention"),
               ("mlp", "mlp"), ("ffn", "mlp"), ("feed_forward", "mlp"))


def _meta_count(cfg: dict) -> dict[str, int]:
    """Parameter counts of any causal LM config, from a model built on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    counts = dict.fromkeys(("embedding", "attention", "mlp", "norm", "lm_head", "other"), 0)
    seen = set()
    for name, p in model.named_parameters():  # tied weights are yielded once
        if id(p) in seen:
            continue
        seen.add(id(p))
        component = next((c for frag, c in _COMPONENTS if frag in name), "other")
        counts[component] += p.numel()
    if not counts["other"]:
        del counts["other"]
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
        # counts only: the first layers stand in for the kept ones (the stage cuts the real ones)
        cfg.update(kept_layer_config(cfg, list(range(keep)), cfg["num_hidden_layers"]))
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
    totals = _totals(cfg, dimension, options)
    best = min(options, key=lambda k: abs(totals[k] - target))
    if abs(totals[best] - target) > TOLERANCE * target:
        lo, hi = totals[options[0]], totals[options[-1]]
        raise InputError(
            f"prune: target_params {target:,} is unreachable by pruning {dimension} ({key}): "
            f"reachable totals run from {lo:,} to {hi:,}, and the closest is {totals[best]:,} "
            f"({key}={best}), more than {TOLERANCE:.0%} away"
        )
    return best


def _totals(cfg: dict, dimension: str, options: list[int]) -> dict[int, int]:
    """Total parameters for each keep count; affine in the count, so a meta-built model is built twice."""
    if cfg["model_type"] in LAYOUTS or len(options) < 3:
        return {k: param_count(resized(cfg, dimension, k))["total"] for k in options}
    a, b = options[0], options[1]
    ta, tb = (param_count(resized(cfg, dimension, k))["total"] for k in (a, b))
    step = (tb - ta) // (b - a)
    return {k: ta + (k - a) * step for k in options}
