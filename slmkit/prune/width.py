"""Width pruning: MLP neurons (Minitron activation importance) and key/value head groups."""

from __future__ import annotations

from slmkit.errors import InputError
from slmkit.prune import budget, importance
from slmkit.prune.calibration import Needs, Stats
from slmkit.prune.config import WidthAttentionConfig, WidthMlpConfig
from slmkit.prune.surgery import head_dim_of, prune_kv_groups, prune_mlp_neurons


def resolve_neurons(cfg: WidthMlpConfig, model_config: dict) -> int:
    """MLP neurons kept per layer; InputError when the request does not fit the model."""
    total = model_config["intermediate_size"]
    if cfg.target_params is not None:
        return budget.solve_keep(model_config, "mlp_neurons", cfg.target_params, cfg.multiple_of)
    keep = cfg.keep_neurons if cfg.keep_neurons is not None else int(cfg.keep_ratio * total)
    keep -= keep % cfg.multiple_of
    if not 1 <= keep <= total:
        raise InputError(
            f"prune.{'keep_neurons' if cfg.keep_neurons is not None else 'keep_ratio'}: "
            f"gives {keep} neurons per layer (multiple_of={cfg.multiple_of}) "
            f"but the model's intermediate_size is {total}; expected 1..{total}"
        )
    return keep


def resolve_groups(cfg: WidthAttentionConfig, model_config: dict) -> int:
    """Key/value groups kept per layer; InputError when the request does not fit the model."""
    total = model_config["num_key_value_heads"]
    if cfg.target_params is not None:
        return budget.solve_keep(model_config, "kv_groups", cfg.target_params)
    keep = cfg.keep_kv_groups if cfg.keep_kv_groups is not None else round(cfg.keep_ratio * total)
    if not 1 <= keep <= total:
        raise InputError(
            f"prune.{'keep_kv_groups' if cfg.keep_kv_groups is not None else 'keep_ratio'}: gives {keep} "
            f"key/value groups but the model has num_key_value_heads={total}; expected 1..{total}"
        )
    return keep


def mlp_needs(cfg, model_config: dict, keep: int) -> Needs:
    return Needs(mlp_abs=True)


def attention_needs(cfg, model_config: dict, keep: int) -> Needs:
    return Needs(head_norms=True)


def apply_mlp(model, stats: Stats, cfg: WidthMlpConfig, keep: int, **_) -> dict:
    layers = range(model.config.num_hidden_layers)
    scores = [stats.mlp_abs[i] / stats.tokens for i in layers]
    kept = [importance.top_k_indices(s, keep) for s in scores]
    prune_mlp_neurons(model, kept)
    return {
        "neurons_kept": keep,
        # the share of total activation mass that survives says how lossy the cut was per layer
        "activation_mass_kept": [
            round(float(s[k].sum() / s.sum().clamp_min(1e-30)), 6) for s, k in zip(scores, kept)
        ],
    }


def apply_attention(model, stats: Stats, cfg: WidthAttentionConfig, keep: int, **_) -> dict:
    config = model.config
    groups = config.num_key_value_heads
    scores = [
        importance.group_scores(stats.head_norms[i] / stats.tokens, groups)
        for i in range(config.num_hidden_layers)
    ]
    kept = [importance.top_k_indices(s, keep) for s in scores]
    head_dim = head_dim_of(config)
    prune_kv_groups(model, kept)
    return {
        "kv_groups_kept": keep,
        "head_dim": head_dim,
        "kept_groups": [k.tolist() for k in kept],
        "group_scores": [[round(float(x), 6) for x in s] for s in scores],
    }
