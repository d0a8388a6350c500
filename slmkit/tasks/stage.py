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
from slmkit.tasks import evaluate as E
from slmkit.tasks.config import ScoreDistillConfig, TaskConfig
from slmkit.tasks.data import ScoringRow, load_rows
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


def task_rows(path: Path, task: TaskConfig, *, require_labels: bool = False) -> list[ScoringRow]:
    """Rows of a data file, with the task's column names and declared labels."""
    d = task.data
    fields = {"context": d.context_field, "item": d.item_field, "label": d.label_field, "group": d.group_field}
    return load_rows(path, task.labels, require_labels=require_labels, fields=fields)


def model_key(model_dir: Path) -> str:
    """Identity of a model directory for cache keys: the manifest's content hash when slmkit wrote it."""
    import json

    manifest = Path(model_dir) / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        return str(data.get("content_hash") or data.get("cache_key") or model_dir)
    return str(Path(model_dir).resolve())


def cached_teacher_logits(ctx: StageContext, task: TaskConfig, rows: Sequence[ScoringRow], batch_size: int):
    """Teacher label logits of ``rows``, computed once per (teacher, prompt, rows) and reused."""
    key = {"teacher": model_key(ctx.teacher_dir), "rows": rows_fingerprint(rows),
           "task": task.model_dump(mode="json", exclude={"kd", "primary_metric", "data"})}

    def build(tmp: Path) -> dict:
        scorer = load_scorer(ctx.teacher_dir, task)
        ctx.reporter.info(f"scoring {len(rows)} rows with the teacher ({scorer.kind})")
        return write_teacher_cache(tmp, teacher_logits(scorer, rows, batch_size), rows)

    return read_teacher_cache(ctx.dataset_artifact("teacher_scores", key, build), rows)


def run_score_distill(ctx: StageContext, task: TaskConfig, cfg: ScoreDistillConfig, train_path: Path) -> StageOutput:
    """Distill teacher scores into the input model and write it to ``ctx.out_dir``."""
    from slmkit.models import save_model

    rows = task_rows(train_path, task)
    teacher = cached_teacher_logits(ctx, task, rows, cfg.teacher_batch_size)
    student = load_scorer(ctx.input_dir, task)
    metrics = distill_scorer(student, rows, teacher, task, cfg, seed=ctx.recipe.seed, work_dir=ctx.work_dir,
                             reporter=ctx.reporter)
    save_model(student.model, student.tokenizer, ctx.out_dir)
    return StageOutput(metrics=metrics, details={"scorer": student.kind, "train_rows": len(rows),
                                                 "kd": task.kd.model_dump(mode="json")})


def quality_retained(model: dict, teacher: dict, task: TaskConfig) -> float | None:
    """The primary metric of the model as a fraction of the teacher's (inverted for lower-is-better)."""
    name = task.primary_metric
    return retained(model.get(name), teacher.get(name), name)


def benchmark_scorer(
    model_dir: Path, teacher_dir: Path, eval_path: Path, task: TaskConfig, *,
    batch_sizes: Sequence[int] = (1, 16, 64), candidates: int = 20, onnx_dir: Path | None = None,
) -> dict:
    """Quality and speed figures of a scorer model against its teacher, for the benchmark report."""
    rows = task_rows(eval_path, task, require_labels=True)
    model, teacher = load_scorer(model_dir, task), load_scorer(teacher_dir, task)
    m_metrics, notes, m_logits = E.evaluate_scorer(model, rows, task)
    t_metrics, _, t_logits = E.evaluate_scorer(teacher, rows, task)
    speed = {"torch": E.scoring_speed(E.default_score_fn(model), rows, batch_sizes=batch_sizes,
                                      candidates=candidates)}
    if isinstance(model, CausalLMScorer):  # the plain path too, so the prefix-sharing gain is visible
        from slmkit.tasks.scorers import score_rows

        speed["torch-independent"] = E.scoring_speed(lambda r: score_rows(model, r, batch_size=64), rows,
                                                     batch_sizes=batch_sizes, candidates=candidates)
    if onnx_dir is not None:
        from slmkit.tasks.onnx_export import onnx_score_fn

        for name in ("scorer.onnx", "scorer.int8.onnx"):
            if (Path(onnx_dir) / name).is_file():
                speed[f"onnxruntime:{name}"] = E.scoring_speed(onnx_score_fn(Path(onnx_dir) / name, model), rows,
                                                               batch_sizes=batch_sizes, candidates=candidates)
    return {"model": m_metrics, "teacher": t_metrics, "agreement": E.agreement(m_logits, t_logits),
            "quality_retained": quality_retained(m_metrics, t_metrics, task),
            "primary_metric": task.primary_metric, "speed": speed, "notes": notes}


def export_scorer_artifact(model_dir: Path, rows_path: Path, task: TaskConfig, out_dir: Path, *,
                           int8: bool = True, max_rows: int = 64) -> dict:
    """ONNX (and int8) files of a scorer model in ``out_dir``, verified on up to ``max_rows`` rows."""
    from slmkit.tasks.onnx_export import export_and_verify

    rows = task_rows(rows_path, task)[:max_rows]
    return export_and_verify(load_scorer(model_dir, task), rows, out_dir, int8=int8)
