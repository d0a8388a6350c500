"""Structured pruning: depth, width (MLP / attention), OSSCAR and Wanda sparsity.

Public entry points: ``PruneConfig`` (the recipe union), ``plan`` (dry run from a config) and
``slmkit.prune.stage.run``; depth surgery by explicit indices is ``slmkit.prune.surgery.keep_layers``.
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


__all__ = [
    "DepthConfig",
    "OsscarConfig",
    "PruneConfig",
    "SparsityConfig",
    "WidthAttentionConfig",
    "WidthMlpConfig",
    "plan",
]
