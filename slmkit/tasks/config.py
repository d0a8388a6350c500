"""Recipe sections of predictive tasks: what is scored, how it is prompted, how scores are distilled.

A recipe picks ``task: {kind: ranking | classification, ...}`` beside the default generation
task. The same section drives the teacher and the student: a causal LM reads
``template`` and answers with one of the ``verbalizers``; a sequence classifier reads the
(context, item) pair and its head gives one logit per label (or a single logit for two labels).

Example::

    task:
      kind: ranking
      labels: [0, 1]
      verbalizers: [" No", " Yes"]
      template: "Query: {context}\\nCandidate: {item}\\nDoes the candidate answer the query?\\nAnswer:"
      primary_metric: ndcg@10
    data:
      train: {path: builtin:ranking_train}
      eval: {path: builtin:ranking_eval}

The rows come from the recipe's ``data:`` section (the same files and hub datasets as other
tasks); ``task.columns`` names their columns.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from slmkit.schema import StrictModel

Label = int | str

PRIMARY_METRICS = ("auc", "accuracy", "log_loss", "ndcg@k", "mrr", "ece")


class TaskDataConfig(StrictModel):
    """Column names of the scored rows (the files are the recipe's `data:` splits)."""

    context_field: str = Field("context", description="Column holding the context (query, member, document).")
    item_field: str = Field("item", description="Column holding the candidate item scored against the context.")
    label_field: str = Field("label", description="Column holding the label; must be one of `task.labels`.")
    group_field: str = Field(
        "group", description="Column grouping the candidates of one context; defaults to the context text when absent."
    )


class ScoreKDConfig(StrictModel):
    """Knowledge distillation on scores: student score distribution matches the teacher's."""

    kind: Literal["kl", "bce", "listwise_kl"] = Field(
        "kl",
        description="kl: KL(teacher || student) over the label distribution of each row; "
        "bce: binary cross-entropy with the teacher's positive probability as soft target (binary labels); "
        "listwise_kl: KL between softmaxes of the positive scores over each group's candidates (ranking).",
    )
    temperature: float = Field(1.0, gt=0, description="Softens both distributions; the KD term is scaled by T^2.")
    hard_label_weight: float = Field(
        0.0, ge=0, le=1, description="Weight of the hard-label loss where rows have labels: (1-w)*kd + w*hard."
    )


class TaskConfig(StrictModel):
    """A predictive task: ranking (binary relevance per candidate, grouped) or classification."""

    kind: Literal["ranking", "classification"] = Field(
        "ranking", description="ranking: candidates per context are ordered by score; classification: one label per row."
    )
    labels: list[Label] = Field(
        [0, 1],
        min_length=2,
        description="The declared label set, in order; for ranking exactly two, the second being 'relevant'.",
    )
    verbalizers: list[str] = Field(
        [" No", " Yes"],
        description="For causal-LM scorers: one single-token answer per label, in the order of `labels`.",
    )
    template: str = Field(
        "Query: {context}\nCandidate: {item}\nDoes the candidate answer the query? Answer Yes or No.\nAnswer:",
        description="Prompt for causal-LM scorers; `{context}` must come before `{item}` so the context's KV cache "
        "can be shared by all candidates.",
    )
    chat_template: bool = Field(
        False, description="Wrap the template in the tokenizer's chat template as a user turn (instruct teachers)."
    )
    max_length: int = Field(512, gt=8, description="Token budget of one (context, item) input; longer contexts are cut.")
    columns: TaskDataConfig = Field(
        default_factory=TaskDataConfig,
        description="Column names of the rows in `data.train` / `data.eval` (context, item, label, group).",
    )
    primary_metric: str = Field(
        "auc", description="Metric `quality_retained` is computed on: auc, accuracy, log_loss, ndcg@<k>, mrr or ece."
    )
    kd: ScoreKDConfig = Field(default_factory=ScoreKDConfig, description="How a student is distilled on scores.")

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        problems = []
        if len(set(map(str, self.labels))) != len(self.labels):
            problems.append(f"task.labels has duplicates: {self.labels}")
        if self.kind == "ranking" and len(self.labels) != 2:
            problems.append(f"task.labels: ranking needs exactly two labels (irrelevant, relevant), got {self.labels}")
        if len(self.verbalizers) != len(self.labels):
            problems.append(f"task.verbalizers: need one per label ({len(self.labels)}), got {len(self.verbalizers)}")
        i, j = self.template.find("{context}"), self.template.find("{item}")
        if i < 0 or j < 0 or i > j:
            problems.append("task.template must contain `{context}` followed later by `{item}`")
        if self.template.count("{item}") != 1 or self.template.count("{context}") != 1:
            problems.append("task.template must contain `{context}` and `{item}` exactly once each")
        if _metric_name(self.primary_metric) not in PRIMARY_METRICS:
            problems.append(f"task.primary_metric: expected one of auc, accuracy, log_loss, ndcg@<k>, mrr, ece; "
                            f"got {self.primary_metric!r}")
        if self.kd.kind == "bce" and len(self.labels) != 2:
            problems.append("task.kd.kind: bce needs two labels; use kl for more")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _metric_name(metric: str) -> str:
    """'ndcg@10' -> 'ndcg@k'; other names unchanged."""
    if metric.startswith("ndcg@") and metric[5:].isdigit() and int(metric[5:]) > 0:
        return "ndcg@k"
    return metric


class ScoreDistillConfig(StrictModel):
    """The distill stage of a ranking / classification recipe: train a scorer student on teacher scores.

    Example::

        - distill: {method: score_kd, max_steps: 300, batch_size: 32, lr: 5.0e-5}
    """

    method: Literal["score_kd"] = Field("score_kd", description="Distil scores (the loss is `task.kd`).")
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(32, ge=1, description="Rows per step, rounded up to whole groups (listwise needs them).")
    lr: float = Field(5e-5, gt=0, description="Peak AdamW learning rate, decayed linearly to 0.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    bf16: bool = Field(False, description="bfloat16 autocast for the student (AMX CPUs and GPUs).")
    teacher_batch_size: int = Field(32, ge=1, description="Candidates per teacher forward pass when caching scores.")
    checkpoint_every: int = Field(50, ge=1, description="Steps between resumable checkpoints in the work dir.")


# stage settings that only make sense for one kind of task; the recipe loader reports them together
GENERATION_ONLY_EXPORTS = ("gguf",)


def task_stage_problems(task: TaskConfig | str, stages) -> list[tuple[tuple, str]]:
    """(YAML path, message) for each stage the recipe's task cannot run (checked at validation, exit 2).

    ``stages`` are the recipe's StageSpecs. A generation recipe cannot distill scores and a
    predictive one cannot distill next-token logits; a scorer has no GGUF form and no
    generation metrics.
    """
    predictive = isinstance(task, TaskConfig)
    out = []
    for s in stages:
        cfg, at = s.config, ("stages", s._index, s.kind)
        if cfg is None:  # its own validation failed and is already reported
            continue
        method = getattr(cfg, "method", None)
        if s.kind == "distill" and method == "score_kd" and not predictive:
            out.append((at + ("method",), ("score_kd distills a scorer: it needs `task: {kind: ranking}` or "
                                           "`task: {kind: classification}`, but the recipe's task is generation")))
        elif s.kind == "distill" and method != "score_kd" and predictive:
            out.append((at, (f"the recipe's task is {task.kind}: distill scores with `method: score_kd` "
                             f"(method {method!r} distills next-token logits of a generator)")))
        elif s.kind == "quantize" and predictive:
            out.append((at, (f"quantize stages build generation runtimes; for a {task.kind} scorer use "
                             "`export: {formats: [onnx]}`, which writes an int8 ONNX copy too")))
        elif s.kind == "export" and predictive:
            bad = [f for f in cfg.formats if f in GENERATION_ONLY_EXPORTS]
            if bad:
                out.append((at + ("formats",), f"a {task.kind} scorer exports to onnx or hf, not {bad}"))
        elif s.kind == "benchmark":
            out += _benchmark_problems(cfg, at, task if predictive else None)
    return out


def _benchmark_problems(cfg, at: tuple, task: TaskConfig | None) -> list[tuple[tuple, str]]:
    scoring = "scoring" in cfg.quality
    if task is None and scoring:
        return [(at + ("quality",), ("`scoring` measures ranking/classification scorers; the recipe's task is "
                                     "generation"))]
    if task is not None and "quality" in cfg.model_fields_set and not scoring:
        return [(at + ("quality",), (f"the recipe's task is {task.kind}: its quality figures are the task "
                                     "metrics, `quality: [scoring]` (or leave `quality` out)"))]
    return []
