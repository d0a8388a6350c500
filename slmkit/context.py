"""What a stage receives from the pipeline, and what it hands back.

Every stage kind implements ``run(ctx: StageContext) -> StageOutput`` in its package's
``stage.py``. The pipeline builds the context: it resolves the input artifact, makes the
temporary output directory (renamed into place by the store only after ``run`` returns), and
seeds everything. A stage writes its files into ``ctx.out_dir`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: torch is slow to import and the CLI must start fast
    import torch

    from slmkit.data import Example
    from slmkit.progress import Reporter
    from slmkit.recipe import Recipe, StageSpec


@dataclass
class StageContext:
    recipe: Recipe
    stage: StageSpec  # .name, .kind and .config (the stage's validated method config)
    out_dir: Path  # temporary directory: write the artifact's files here
    input_dir: Path | None  # the input model artifact (an HF model directory), None if the stage needs none
    input_manifest: dict | None
    teacher_dir: Path  # the teacher's `source` artifact: an HF model directory
    run_dir: Path  # <output_dir>/<recipe name>
    reporter: Reporter
    work_dir: Path | None = None  # persistent scratch keyed by (config, input): checkpoints for resume
    store: Any = None  # slmkit.artifacts.Store of this run
    recipe_path: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # artifacts other stages produced (e.g. datasets)

    @property
    def device(self) -> torch.device:
        from slmkit.runtimes.pytorch import resolve_device

        return resolve_device(self.recipe.teacher.device)

    def examples(self, split: str, tokenizer, max_length: int | None = None) -> list[Example]:
        """Tokenized examples of the recipe's ``data.<split>`` (train, eval or calibration)."""
        from slmkit.data import load_split

        return load_split(self.recipe, split, tokenizer, max_length=max_length, base_dir=self.recipe_dir)

    @property
    def recipe_dir(self) -> Path:
        return self.recipe_path.parent if self.recipe_path else Path.cwd()

    def dataset_artifact(self, kind: str, key: dict, build: Callable[[Path], dict]) -> Path:
        """A committed dataset artifact ``<run_dir>/<kind>/v<N>`` for ``key``, built once.

        ``build(tmp_dir)`` writes the files and returns metrics for the manifest; it runs only
        when no committed version has the same key, so later stages and runs reuse the data.
        """
        return self.store.dataset(kind, key, build, reporter=self.reporter)


@dataclass
class StageOutput:
    """What a stage reports back; the store writes it into manifest.json."""

    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # method-specific facts (bits, sizes, per-layer scores)
    artifact_type: str = "model"  # model | dataset | report | onnx | gguf
    model_card_notes: list[str] = field(default_factory=list)  # extra paragraphs for README.md
