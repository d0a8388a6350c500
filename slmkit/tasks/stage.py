"""The stage kinds of ranking / classification recipes: their one way into distill, export, benchmark.

The pipeline runs these in place of the generation stage bodies when the recipe has a
``task:`` section (``slmkit.stages`` names both); prune works on scorers as on any model. Each
entry takes the ``StageContext`` and returns a ``StageOutput``:

- :func:`finetune` — the input scorer (by default the teacher) trained on the labels of
  data.train, full or LoRA (merged), before anything is distilled from it.
- :func:`distill` — teacher scores cached as a ``teacher_scores`` dataset artifact, the student
  (``ctx.input_dir``: a causal LM, a classifier or a bare encoder) trained on them.
- :func:`export` — ``onnx/scorer.onnx`` + ``scorer.int8.onnx`` verified on eval rows, ``hf/``.
- :func:`benchmark` — task metrics, teacher agreement, ``quality_retained`` and scoring speed of
  the teacher and every scorer artifact (``slmkit.benchmark.scoring``), with the usual report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from slmkit.context import StageContext, StageOutput
from slmkit.errors import InputError
from slmkit.tasks import evaluate as E
from slmkit.tasks.config import ScoreDistillConfig, TaskConfig
from slmkit.tasks.data import ScoringRow, load_rows, rows_from_records
from slmkit.tasks.loading import load_scorer
from slmkit.tasks.scorers import CausalLMScorer
from slmkit.tasks.train import (
    distill_scorer,
    finetune_scorer,
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
    """Rows of the recipe's ``data.<split>`` (read by slmkit.data as every split is), validated for its task."""
    from slmkit.data import read_rows

    task, spec = ctx.recipe.predictive, getattr(ctx.recipe.data, split)
    if spec is None:
        raise InputError(f"task {task.kind}: this stage reads data.{split}, which the recipe does not give "
                         "(rows of context, item, label, group; e.g. `{path: builtin:ranking_%s}`)" % split)
    records, source = read_rows(spec, ctx.recipe_dir)
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
    onnx, onnx_logits = {}, {}
    if onnx_dir is not None:
        from slmkit.tasks.onnx_export import onnx_score_fn

        for name in ("scorer.onnx", "scorer.int8.onnx"):
            if (Path(onnx_dir) / name).is_file():
                fn = onnx_score_fn(Path(onnx_dir) / name, model)
                onnx_logits[name] = fn(rows)
                onnx[name] = E.evaluate(onnx_logits[name], rows, task)[0]
                speed[f"onnxruntime:{name}"] = E.scoring_speed(fn, rows, batch_sizes=batch_sizes,
                                                               candidates=candidates)
    return {"metrics": metrics, "notes": notes, "logits": logits, "speed": speed, "onnx_metrics": onnx,
            "onnx_logits": onnx_logits, "scorer": model.kind}


def export_scorer_artifact(model_dir: Path, rows: Path | Sequence[ScoringRow], task: TaskConfig, out_dir: Path, *,
                           int8: bool = True, max_rows: int = 64) -> dict:
    """ONNX (and int8) files of a scorer model in ``out_dir``, verified on up to ``max_rows`` rows."""
    from slmkit.tasks.onnx_export import export_and_verify

    rows = (task_rows(rows, task) if isinstance(rows, (str, Path)) else list(rows))[:max_rows]
    return export_and_verify(load_scorer(model_dir, task), rows, out_dir, int8=int8)


# ---------------------------------------------------------------- the stage entry points


def finetune(ctx: StageContext) -> StageOutput:
    """Fine-tune the input scorer (by default the teacher) on the labels of data.train, full or LoRA."""
    from slmkit.finetune.stage import adapt, describe, unwrap
    from slmkit.models import save_model

    task, cfg = ctx.recipe.predictive, ctx.stage.config
    if ctx.input_dir is None:
        raise InputError("finetune: no input model")
    rows = split_rows(ctx, "train", require_labels=True)  # bad rows stop here, before a model is loaded
    scorer = load_scorer(ctx.input_dir, task)  # fp32 master weights; `bf16: true` autocasts the compute
    scorer.model, wrapped = adapt(scorer.model, cfg, ctx.recipe.seed)
    scorer.model.to(ctx.device)
    metrics = finetune_scorer(scorer, rows, cfg, seed=ctx.recipe.seed, work_dir=ctx.work_dir, reporter=ctx.reporter)
    save_model(unwrap(scorer.model, wrapped).to("cpu"), scorer.tokenizer, ctx.out_dir)
    return StageOutput(metrics=metrics, details={"scorer": scorer.kind, "method": cfg.method, "train_rows": len(rows),
                                                 "label_loss": cfg.label_loss},
                       model_card_notes=[describe(cfg).replace("data.train", f"the {task.kind} labels of data.train")])


def distill(ctx: StageContext) -> StageOutput:
    """Distill the teacher's scores on data.train into the input scorer."""
    if ctx.input_dir is None:
        raise InputError("distill: no student: give `student:` in the recipe or put a stage before distill")
    task = ctx.recipe.predictive
    out = run_score_distill(ctx, task, ctx.stage.config, split_rows(ctx, "train"))
    out.model_card_notes.append(f"Distilled on teacher scores ({task.kd.kind}) for {out.metrics['steps']} steps.")
    return out


def export(ctx: StageContext) -> StageOutput:
    """``onnx/scorer.onnx`` + ``scorer.int8.onnx`` verified on eval rows (train rows without an eval
    split), and ``hf/`` as a byte copy; GGUF is refused at validation."""
    import shutil

    from slmkit.export.hf import model_files
    from slmkit.quantize.files import path_size

    if ctx.input_dir is None:
        raise InputError(f"stage {ctx.stage.name}: export needs an input model artifact")
    cfg, task, written, metrics, kept = ctx.stage.config, ctx.recipe.predictive, {}, {}, []
    if "hf" in cfg.formats:
        (ctx.out_dir / "hf").mkdir(parents=True)
        for f in model_files(ctx.input_dir):
            shutil.copyfile(f, ctx.out_dir / "hf" / f.name)
        written["hf"] = {"path": "hf", "size_bytes": path_size(ctx.out_dir / "hf")}
    if "onnx" in cfg.formats:
        rows = split_rows(ctx, "eval" if ctx.recipe.data.eval is not None else "train")
        ctx.reporter.info(f"export: writing the {task.kind} scorer as ONNX (+ int8), verified on up to 64 rows")
        checks = export_scorer_artifact(ctx.input_dir, rows, task, ctx.out_dir / "onnx")
        written["onnx"] = {"path": "onnx", "size_bytes": path_size(ctx.out_dir / "onnx"), "verification": checks}
        for precision, check in checks.items():
            check["path"] = f"onnx/{Path(check['path']).name}"  # the temporary dir is renamed on commit
            metrics[f"onnx_{precision}_max_abs_score_diff"] = check.get("max_abs_score_diff")
        if kept := checks.get("int8", {}).get("fp32_blocks"):
            ctx.reporter.info(f"export: the all-int8 graph drifted past the bound; block {kept[0]} stays fp32, "
                              f"the rest int8 (largest drift {checks['int8']['max_abs_score_diff']:.3f})")
    metrics.update({f"{fmt}_size_bytes": d["size_bytes"] for fmt, d in written.items()})
    note = (f"{task.kind} scorer: `onnx/scorer.onnx` (fp32) and `onnx/scorer.int8.onnx` take token ids and "
            "return label logits.")
    if kept:
        note += f" The int8 graph keeps transformer block {kept[0]} in fp32."
    return StageOutput(metrics=metrics, details={"formats": written, "task": task.kind},
                       model_card_notes=[note] if "onnx" in written else [])


def benchmark(ctx: StageContext) -> StageOutput:
    """Task metrics and scoring speed of the teacher and every scorer artifact, and the report."""
    from slmkit.benchmark.scoring import benchmark_scorers
    from slmkit.benchmark.stage import finish, model_entries

    cfg, task = ctx.stage.config, ctx.recipe.predictive
    models = model_entries(ctx.teacher_dir, ctx.extras.get("artifacts", []), cfg.models)
    rows = split_rows(ctx, "eval", require_labels=True)
    results = benchmark_scorers(models, rows, task, cfg, ctx.reporter.info, ctx.recipe.name,
                                prior=train_label_prior(ctx, task))
    return finish(ctx, results, models)


def train_label_prior(ctx: StageContext, task: TaskConfig):
    """Label frequencies of data.train (None without labelled training rows): the base rate the
    log-loss and ECE baselines predict, so the baseline is not fitted on the eval labels."""
    from slmkit.benchmark.baselines import label_frequencies

    if ctx.recipe.data.train is None:
        return None
    labels = [r.label for r in split_rows(ctx, "train") if r.label is not None]
    return label_frequencies(labels, len(task.labels)) if labels else None
