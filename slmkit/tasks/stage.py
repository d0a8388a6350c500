"""Predictive-task stage bodies, written against the StageContext contract.

The pipeline's distill and benchmark stages dispatch here when the recipe's task is ranking or
classification (issue 8):

- :func:`run_score_distill` — teacher scores cached as a ``teacher_scores`` dataset artifact,
  the student (``ctx.input_dir``: a causal LM, a classifier or a bare encoder) trained on them,
  written with ``save_model``.
- :func:`benchmark_scorer` — task metrics of the model and the teacher, ``quality_retained`` on
  the primary metric, teacher agreement, and scoring speed per backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from slmkit.context import StageContext, StageOutput
from slmkit.errors import InputError
from slmkit.tasks import evaluate as E
from slmkit.tasks.config import ScoreDistillConfig, TaskConfig
from slmkit.tasks.data import ScoringRow, load_rows, read_records, rows_from_records
from slmkit.tasks.loading import load_scorer
from slmkit.tasks.metrics import retained
from slmkit.tasks.scorers import CausalLMScorer
from slmkit.tasks.train import (
    distill_scorer,
    read_teacher_cache,
    rows_fingerprint,
    teacher_logits,
    write_teacher_cache,
)


def _fields(task: TaskConfig) -> dict[str, str]:
    c = task.columns
    return {"context": c.context_field, "item": c.item_field, "label": c.label_field, "group": c.group_field}


def task_rows(path: Path, task: TaskConfig, *, require_labels: bool = False) -> list[ScoringRow]:
    """Rows of a data file, with the task's column names and declared labels."""
    return load_rows(path, task.labels, require_labels=require_labels, fields=_fields(task))


def split_rows(ctx: StageContext, split: str, *, require_labels: bool = False) -> list[ScoringRow]:
    """Rows of the recipe's ``data.<split>`` (a local file or a hub dataset), validated for its task."""
    from slmkit.recipe import resolve_data_path

    task, spec = ctx.recipe.predictive, getattr(ctx.recipe.data, split)
    if spec is None:
        raise InputError(f"task {task.kind}: this stage reads data.{split}, which the recipe does not give "
                         "(rows of context, item, label, group; e.g. `{path: builtin:ranking_%s}`)" % split)
    if spec.hub is not None:
        import datasets

        records = datasets.load_dataset(spec.hub.name, spec.hub.config, split=spec.hub.split).to_list()
        source = f"{spec.hub.name}[{spec.hub.split}]"
    else:
        path = resolve_data_path(spec.path, ctx.recipe_dir)
        records, source = read_records(path), str(path)
    records = records[: spec.max_samples] if spec.max_samples else records
    return rows_from_records(records, task.labels, source=source, require_labels=require_labels,
                             fields=_fields(task))


def cached_teacher_logits(ctx: StageContext, task: TaskConfig, rows: Sequence[ScoringRow], batch_size: int):
    """Teacher label logits of ``rows``, computed once per (teacher, prompt, rows) and reused."""
    from slmkit.artifacts import artifact_hash

    dtype = ctx.recipe.teacher.dtype  # the teacher runs in its recipe precision, on the recipe's device
    key = {"teacher": artifact_hash(ctx.teacher_dir), "rows": rows_fingerprint(rows), "dtype": dtype,
           "task": task.model_dump(mode="json", exclude={"kd", "primary_metric", "columns"})}

    def build(tmp: Path) -> dict:
        scorer = load_scorer(ctx.teacher_dir, task, dtype)
        scorer.model.to(ctx.device)
        ctx.reporter.info(f"scoring {len(rows)} rows with the teacher ({scorer.kind}, {dtype}, {ctx.device.type})")
        return write_teacher_cache(tmp, teacher_logits(scorer, rows, batch_size), rows)

    return read_teacher_cache(ctx.dataset_artifact("teacher_scores", key, build), rows)


def run_score_distill(ctx: StageContext, task: TaskConfig, cfg: ScoreDistillConfig,
                      train: Path | Sequence[ScoringRow]) -> StageOutput:
    """Distill teacher scores into the input model (rows: a file or loaded rows); write it to ``ctx.out_dir``."""
    from slmkit.models import save_model

    rows = task_rows(train, task) if isinstance(train, (str, Path)) else list(train)
    teacher = cached_teacher_logits(ctx, task, rows, cfg.teacher_batch_size)
    student = load_scorer(ctx.input_dir, task)  # fp32 master weights; `bf16: true` autocasts the compute
    student.model.to(ctx.device)
    metrics = distill_scorer(student, rows, teacher, task, cfg, seed=ctx.recipe.seed, work_dir=ctx.work_dir,
                             reporter=ctx.reporter)
    save_model(student.model.to("cpu"), student.tokenizer, ctx.out_dir)
    return StageOutput(metrics=metrics, details={"scorer": student.kind, "train_rows": len(rows),
                                                 "kd": task.kd.model_dump(mode="json")})


def quality_retained(model: dict, teacher: dict, task: TaskConfig) -> float | None:
    """The primary metric of the model as a fraction of the teacher's (inverted for lower-is-better)."""
    name = task.primary_metric
    return retained(model.get(name), teacher.get(name), name)


def measure_scorer(
    model_dir: Path, rows: Sequence[ScoringRow], task: TaskConfig, *, batch_sizes: Sequence[int] = (1, 16, 64),
    candidates: int = 20, onnx_dir: Path | None = None,
) -> dict:
    """Task metrics, label logits and scoring speed of one scorer (PyTorch, and its ONNX files if given)."""
    model = load_scorer(model_dir, task)
    metrics, notes, logits = E.evaluate_scorer(model, rows, task)
    speed = {"torch": E.scoring_speed(E.default_score_fn(model), rows, batch_sizes=batch_sizes,
                                      candidates=candidates)}
    if isinstance(model, CausalLMScorer):  # the plain path too, so the prefix-sharing gain is visible
        from slmkit.tasks.scorers import score_rows

        speed["torch-independent"] = E.scoring_speed(lambda r: score_rows(model, r, batch_size=64), rows,
                                                     batch_sizes=batch_sizes, candidates=candidates)
    onnx = {}
    if onnx_dir is not None:
        from slmkit.tasks.onnx_export import onnx_score_fn

        for name in ("scorer.onnx", "scorer.int8.onnx"):
            if (Path(onnx_dir) / name).is_file():
                fn = onnx_score_fn(Path(onnx_dir) / name, model)
                onnx[name] = E.evaluate(fn(rows), rows, task)[0]
                speed[f"onnxruntime:{name}"] = E.scoring_speed(fn, rows, batch_sizes=batch_sizes,
                                                               candidates=candidates)
    return {"metrics": metrics, "notes": notes, "logits": logits, "speed": speed, "onnx_metrics": onnx,
            "scorer": model.kind}


def benchmark_scorer(
    model_dir: Path, teacher_dir: Path, eval_path: Path, task: TaskConfig, *,
    batch_sizes: Sequence[int] = (1, 16, 64), candidates: int = 20, onnx_dir: Path | None = None,
) -> dict:
    """Quality and speed figures of a scorer model against its teacher, for the benchmark report."""
    rows = task_rows(eval_path, task, require_labels=True)
    m = measure_scorer(model_dir, rows, task, batch_sizes=batch_sizes, candidates=candidates, onnx_dir=onnx_dir)
    t_metrics, _, t_logits = E.evaluate_scorer(load_scorer(teacher_dir, task), rows, task)
    return {"model": m["metrics"], "teacher": t_metrics, "agreement": E.agreement(m["logits"], t_logits),
            "quality_retained": quality_retained(m["metrics"], t_metrics, task),
            "primary_metric": task.primary_metric, "speed": m["speed"], "notes": m["notes"]}


def export_scorer_artifact(model_dir: Path, rows: Path | Sequence[ScoringRow], task: TaskConfig, out_dir: Path, *,
                           int8: bool = True, max_rows: int = 64) -> dict:
    """ONNX (and int8) files of a scorer model in ``out_dir``, verified on up to ``max_rows`` rows."""
    from slmkit.tasks.onnx_export import export_and_verify

    rows = (task_rows(rows, task) if isinstance(rows, (str, Path)) else list(rows))[:max_rows]
    return export_and_verify(load_scorer(model_dir, task), rows, out_dir, int8=int8)
