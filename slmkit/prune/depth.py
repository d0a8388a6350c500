"""Depth pruning: remove whole decoder layers chosen by calibration importance."""

from __future__ import annotations

import torch

from slmkit.errors import InputError
from slmkit.prune import budget, importance
from slmkit.prune.calibration import Needs, Stats
from slmkit.prune.config import DepthConfig
from slmkit.prune.surgery import keep_layers


def resolve_keep(cfg: DepthConfig, model_config: dict) -> int:
    """How many layers survive; InputError when the request does not fit the model."""
    total = model_config["num_hidden_layers"]
    if cfg.layers is not None:
        bad = [i for i in cfg.layers if not 0 <= i < total]
        if bad or len(set(cfg.layers)) != len(cfg.layers):
            raise InputError(f"prune.layers: expected distinct indices in 0..{total - 1}, got {cfg.layers}")
        return len(cfg.layers)
    if cfg.target_params is not None:
        return budget.solve_keep(model_config, "layers", cfg.target_params)
    keep = cfg.keep_layers if cfg.keep_layers is not None else total - cfg.remove_layers
    if not 1 <= keep <= total:
        asked = (
            f"keep_layers={cfg.keep_layers}"
            if cfg.keep_layers is not None
            else f"remove_layers={cfg.remove_layers}"
        )
        raise InputError(
            f"prune.{asked}: the model has {total} layers; at least 1 must remain and at most {total} can"
        )
    return keep


def needs(cfg: DepthConfig, model_config: dict, keep: int) -> Needs:
    removed = model_config["num_hidden_layers"] - keep
    block = cfg.importance == "angular_block" and cfg.layers is None and removed > 0
    return Needs(angular_block=removed if block else None)


def keep_by_influence(influence: torch.Tensor, keep: int) -> list[int]:
    """The ``keep`` layers with the highest block influence, in model order."""
    return importance.top_k_indices(influence, keep).tolist()


def keep_by_block(angular: torch.Tensor, total: int, keep: int) -> list[int]:
    """All layers except the contiguous block [l, l+n) whose ends are closest in angle."""
    start = int(torch.argmin(angular))
    return [i for i in range(total) if not start <= i < start + (total - keep)]


def apply(model, stats: Stats, cfg: DepthConfig, keep: int, **_) -> dict:
    total = model.config.num_hidden_layers
    if cfg.layers is not None:
        kept = sorted(cfg.layers)
    elif stats.angular_block is not None:
        kept = keep_by_block(stats.angular_block / stats.tokens, total, keep)
    else:
        kept = keep_by_influence(stats.block_influence, keep)
    keep_layers(model, kept)
    details = {"kept_layers": kept, "removed_layers": [i for i in range(total) if i not in kept]}
    if stats.angular_block is not None:
        details["block_angular_distance"] = [round(float(x), 6) for x in stats.angular_block / stats.tokens]
    return details
