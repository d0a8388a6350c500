"""The closed registry of stage kinds: the recipe section each takes and the code that runs it.

Every other place that needs the list of kinds (the recipe schema, the pipeline, the CLI's
per-kind commands) reads it from here. Nothing is discovered by walking packages and nothing
is imported from a dotted path a recipe gives: the table below is the whole set. Config
modules are torch-free, so validating a recipe never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageKind:
    config: str  # "module:name" of the recipe section's pydantic type (a class or an annotated union)
    runner: str  # "module:function" that runs the stage of a generation recipe
    scorer_runner: str | None = None  # the same for ranking / classification recipes, when it differs

    def config_type(self) -> Any:
        return _load(self.config)

    def run_function(self, predictive: bool) -> Callable:
        """``run(ctx) -> StageOutput`` for a recipe with (``predictive``) or without a task section."""
        return _load(self.scorer_runner if predictive and self.scorer_runner else self.runner)


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


STAGE_KINDS: dict[str, StageKind] = {
    "finetune": StageKind("slmkit.finetune.config:FinetuneConfig", "slmkit.finetune.stage:run",
                          "slmkit.tasks.stage:finetune"),
    "prune": StageKind("slmkit.prune.config:PruneConfig", "slmkit.prune.stage:run"),
    "distill": StageKind("slmkit.distill.config:DistillStageConfig", "slmkit.distill.stage:run",
                         "slmkit.tasks.stage:distill"),
    "quantize": StageKind("slmkit.quantize.config:QuantizeConfig", "slmkit.quantize.stage:run"),
    "export": StageKind("slmkit.export.config:ExportConfig", "slmkit.export.stage:run", "slmkit.tasks.stage:export"),
    "benchmark": StageKind("slmkit.benchmark.config:BenchmarkConfig", "slmkit.benchmark.stage:run",
                           "slmkit.tasks.stage:benchmark"),
}
