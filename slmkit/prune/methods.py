"""The closed registry of prune methods, and ``plan``: the outcome of a config without weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from slmkit.prune import budget, depth, osscar, sparsity, width
from slmkit.prune.archs import check_method


@dataclass(frozen=True)
class Method:
    dimension: (
        str | None
    )  # what shrinks: layers | mlp_neurons | kv_groups | None (weights zeroed, not removed)
    resolve: Callable  # (config, model_config dict) -> keep count; raises InputError on bad targets
    needs: Callable  # (config, model_config dict, keep) -> calibration.Needs
    apply: Callable  # (model, stats, config, keep, work_dir=, reporter=) -> details dict


METHODS: dict[str, Method] = {
    "depth": Method("layers", depth.resolve_keep, depth.needs, depth.apply),
    "width_mlp": Method("mlp_neurons", width.resolve_neurons, width.mlp_needs, width.apply_mlp),
    "width_attention": Method(
        "kv_groups", width.resolve_groups, width.attention_needs, width.apply_attention
    ),
    "osscar": Method("mlp_neurons", width.resolve_neurons, osscar.needs, osscar.apply),
    "sparsity": Method(None, sparsity.resolve_keep, sparsity.needs, sparsity.apply),
}

_SIZE_KEYS = (
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)


def plan(config, model_config) -> dict:
    """The pruned config sizes and parameter counts for ``config`` applied to ``model_config``.

    Reads nothing but the config (dict or PretrainedConfig): this is what ``--dry-run`` prints.
    Raises InputError for an unsupported architecture or a target the model cannot meet.
    """
    cfg = budget.config_dict(model_config)
    check_method(cfg, config.method)
    method = METHODS[config.method]
    keep = method.resolve(config, cfg)
    after = budget.resized(cfg, method.dimension, keep) if method.dimension else dict(cfg)
    before_sizes = {k: cfg.get(k) for k in _SIZE_KEYS}
    before_sizes["head_dim"] = budget._head_dim(cfg)
    result = {
        "method": config.method,
        "dimension": method.dimension,
        "keep": keep if method.dimension else None,
        "config_before": before_sizes,
        "config_after": {k: after.get(k, before_sizes[k]) for k in _SIZE_KEYS},
        "params_before": budget.param_count(cfg),
        "params_after": budget.param_count(after),
    }
    result["params"] = result["params_after"]["total"]
    result["model_config"] = _like(model_config, after)
    result["summary"] = _summary(result)
    if config.method == "sparsity":
        result["notes"] = [sparsity.NO_SPEEDUP]
    if getattr(config, "target_params", None) is not None:
        result["target_params"] = config.target_params
    return result


def _like(model_config, after: dict):
    """``after`` in the type the caller passed: a dict, or a copy of the PretrainedConfig."""
    if isinstance(model_config, dict):
        return after
    new = copy.deepcopy(model_config)
    for key in (*_SIZE_KEYS, "layer_types"):
        if key in after and getattr(new, key, None) != after[key]:
            setattr(new, key, after[key])
    return new


def _summary(result: dict) -> str:
    before, after = result["params_before"]["total"], result["params_after"]["total"]
    changed = [
        f"{k} {v}->{result['config_after'][k]}"
        for k, v in result["config_before"].items()
        if result["config_after"][k] != v
    ]
    sizes = ", ".join(changed) or "sizes unchanged (weights zeroed in place)"
    return f"{result['method']}: {sizes}; params {before:,} -> {after:,}"
