"""Structured pruning: depth, width (MLP / attention), OSSCAR and Wanda sparsity.

Public entry points: ``PruneConfig`` (the recipe union), ``plan`` (dry run from a config),
``keep_layers`` (depth surgery by explicit indices) and ``slmkit.prune.stage.run``.
Only the config classes load eagerly: recipe validation must not pay for importing torch.
"""

from slmkit.prune.config import (
    DepthConfig,
    OsscarConfig,
    PruneConfig,
    SparsityConfig,
    WidthAttentionConfig,
    WidthMlpConfig,
)


def plan(config, model_config) -> dict:
    """Resulting sizes and parameter counts without loading weights (see slmkit.prune.methods.plan)."""
    from slmkit.prune.methods import plan as _plan

    return _plan(config, model_config)


def keep_layers(model, indices):
    """Keep only the decoder layers at ``indices`` (see slmkit.prune.surgery.keep_layers)."""
    from slmkit.prune.surgery import keep_layers as _keep_layers

    return _keep_layers(model, indices)


__all__ = [
    "DepthConfig",
    "OsscarConfig",
    "PruneConfig",
    "SparsityConfig",
    "WidthAttentionConfig",
    "WidthMlpConfig",
    "keep_layers",
    "plan",
]
