"""The `benchmark` stage's recipe section: what to measure, on which backends, and the gates.

Sample YAML::

    - benchmark:
        method: standard
        quality: [perplexity, teacher_agreement, task]
        primary_metric: top1_agreement
        eval_samples: 32
        speed: {backends: [torch_fp32, torch_bf16, onnxruntime_genai], batch_sizes: [1, 8]}
        gates: {quality_retained: ">=0.92", decode_speedup: ">=4"}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from slmkit.benchmark.gates import HEADLINE_FIGURES, Gate, parse_gate
from slmkit.benchmark.quality import METRICS, figure_directions
from slmkit.schema import StrictModel

# A closed set: a recipe naming anything else is a validation error, never a silent skip.
Backend = Literal["torch_fp32", "torch_bf16", "onnxruntime_genai", "llama_cpp", "vllm"]
BACKENDS: tuple[str, ...] = ("torch_fp32", "torch_bf16", "onnxruntime_genai", "llama_cpp", "vllm")


class SpeedConfig(StrictModel):
    """How speed is measured: backends, batch sizes, request shape and repetitions."""

    backends: list[Backend] = Field(
        default=["torch_fp32", "torch_bf16", "onnxruntime_genai", "llama_cpp", "vllm"],
        description="Backends to time each model on (torch_fp32, torch_bf16, onnxruntime_genai, llama_cpp, "
        "vllm). Each model runs on those that can load its format; a backend that is not installed or "
        "needs a missing GPU gives a skipped row with the reason.",
    )
    batch_sizes: list[int] = Field(
        default=[1, 8],
        description="Batch sizes to time; one that does not fit in memory becomes a skipped row.",
    )
    prompt_tokens: int = Field(default=128, ge=1, description="Prompt length (tokens) of each timed request.")
    new_tokens: int = Field(
        default=64, ge=2, description="Tokens generated per timed request (greedy, end-of-sequence ignored)."
    )
    warmup: int = Field(
        default=1, ge=0, description="Untimed requests before the timed ones, per batch size."
    )
    repeats: int = Field(
        default=5,
        ge=1,
        description="Timed requests per batch size; figures are their median with min/max spread.",
    )
    concurrency: int = Field(
        default=4,
        ge=0,
        description="Concurrent batch-1 requests for the throughput figure (0 turns the measurement off).",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for PyTorch (None: the library default); recorded either way.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Device for the PyTorch backends: auto picks cuda when a GPU is present."
    )
    isolate: bool = Field(
        default=True,
        description="Time each (model, backend) in a fresh process, so peak RSS is that model's own and an "
        "out-of-memory kill costs one row, not the run.",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError(f"batch_sizes must be a non-empty list of positive integers, got {v}")
        return v


class BenchmarkConfig(StrictModel):
    """Measure the teacher and every model artifact of the run: quality, speed, ratios and gates."""

    method: Literal["standard"] = Field(default="standard", description="Benchmark method (only `standard`).")
    quality: list[str] = Field(
        default=["perplexity", "teacher_agreement", "task", "answer_likelihood", "general_perplexity"],
        description="Quality metrics: perplexity (eval text), teacher_agreement (top-1 agreement and "
        "KL(teacher||model) on the teacher's own greedy responses), task (exact_match, contains and rouge_l "
        "of generated answers against the eval references), answer_likelihood (the teacher's per-token "
        "likelihood of each greedy answer relative to its own answer's, capped at 1), general_perplexity "
        "(perplexity on `general_text`, prose no stage trained on), lm_eval (lm-evaluation-harness tasks); "
        "scoring (ranking/classification recipes, alone: AUC, accuracy, log loss, ECE, NDCG@k, MRR and "
        "teacher agreement on data.eval; the default for those recipes). Every figure with per-example "
        "values carries a 95% paired-bootstrap interval (docs/benchmark.md).",
    )
    primary_metric: str = Field(
        default="top1_agreement",
        description="The figure quality_retained is computed from (model / teacher; teacher / model for "
        "lower-is-better figures such as perplexity and teacher_kl).",
    )
    eval_samples: int = Field(default=32, ge=1, description="Eval examples used for the quality metrics.")
    general_text: str | None = Field(
        default="builtin:prose",
        description="General English text for general_perplexity: `builtin:prose` (public-domain prose shipped "
        "with slmkit, disjoint from the prompt sets) or a jsonl/json/csv/parquet/txt file with a `text` column, "
        "relative to the recipe; null turns the figure off.",
    )
    general_text_blocks: int = Field(
        default=128, ge=1, description="Blocks of 256 tokens of general_text scored per model (the first N)."
    )
    max_new_tokens: int = Field(
        default=64, ge=1, description="Longest generated answer (teacher responses and task answers)."
    )
    eval_batch_size: int = Field(
        default=8, ge=1, description="Batch size for quality evaluation with PyTorch."
    )
    lm_eval_tasks: list[str] = Field(
        default=[], description="lm-evaluation-harness task names, run when `lm_eval` is in `quality`."
    )
    lm_eval_include_path: str | None = Field(
        default=None, description="Directory of local lm-eval task YAML files, relative to the recipe (for "
        "machines without the hub: `dataset_path: json` with `data_files` relative to the YAML; only these tasks "
        "are indexed). See docs/benchmark.md."
    )
    lm_eval_limit: int | None = Field(
        default=None, ge=1, description="Examples per lm-eval task (None: all)."
    )
    models: list[str] | None = Field(
        default=None,
        description="Artifact ids (`<stage>/v<N>` or stage names) to measure besides the teacher; "
        "None: every model artifact of the run.",
    )
    speed: SpeedConfig = Field(default_factory=SpeedConfig, description="Speed measurement settings.")
    gates: dict[str, str] = Field(
        default={},
        description='Pass/fail thresholds on the final artifact, e.g. {quality_retained: ">=0.92", '
        'decode_speedup: ">=4"}; keys are headline figures or quality figures, or either end of their 95% '
        'interval with a `_low` / `_high` suffix ({quality_retained_low: ">=0.85"}). A miss exits with code 3 '
        "after the report is written.",
    )

    @field_validator("quality")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown quality metric(s) {unknown}; expected some of {sorted(METRICS)}")
        return v

    _gates: list[Gate] = PrivateAttr(default_factory=list)

    @property
    def parsed_gates(self) -> list[Gate]:
        """The gates as parsed once, at validation."""
        return self._gates

    @model_validator(mode="after")
    def _parse_gates(self) -> BenchmarkConfig:
        self._gates = [parse_gate(figure, spec) for figure, spec in self.gates.items()]
        return self

    @model_validator(mode="after")
    def _check_figures(self) -> BenchmarkConfig:
        figures = figure_directions(self.quality)
        if "scoring" in self.quality:
            return self._check_scoring(figures)
        if self.primary_metric not in figures:
            raise ValueError(
                f"primary_metric {self.primary_metric!r} is not produced by quality {self.quality}; "
                f"expected one of {sorted(figures)}"
            )
        if self.primary_metric == "teacher_kl":
            # the teacher's own KL is 0 by definition, so a ratio against it means nothing
            raise ValueError(
                "primary_metric teacher_kl has no teacher ratio (the teacher's KL is 0); "
                "use top1_agreement, or gate on teacher_kl directly"
            )
        allowed = _with_interval_ends(set(HEADLINE_FIGURES) | set(figures))
        bad = [g for g in self.gates if g not in allowed]
        if bad:
            raise ValueError(f"gates on unknown figure(s) {bad}; expected some of {sorted(allowed)}")
        return self

    def _check_scoring(self, figures: dict[str, bool]) -> BenchmarkConfig:
        """Predictive tasks: quality_retained is on `task.primary_metric`; gates may name ndcg@<k>."""
        if self.quality != ["scoring"]:
            raise ValueError(f"quality: `scoring` (ranking/classification scorers) is measured alone, got {self.quality}")
        if "primary_metric" in self.model_fields_set:
            raise ValueError("primary_metric: for `scoring`, quality_retained uses the recipe's task.primary_metric")
        allowed = _with_interval_ends(set(HEADLINE_FIGURES) - {"decode_speedup"} | {"scoring_speedup"} | set(figures))
        bad = [g for g in self.gates if g not in allowed and not re.fullmatch(r"ndcg@[1-9][0-9]*(_low|_high)?", g)]
        if bad:
            raise ValueError(f"gates on unknown figure(s) {bad}; expected some of {sorted(allowed)} or ndcg@<k>")
        return self


_NO_INTERVAL = {"decode_speedup", "scoring_speedup", "size_ratio", "params_ratio", "lm_eval_mean"}


def _with_interval_ends(figures: set[str]) -> set[str]:
    """Figures plus the `_low` / `_high` ends of those that carry an interval (quality figures, retention)."""
    return figures | {f"{f}_{end}" for f in figures - _NO_INTERVAL for end in ("low", "high")}
