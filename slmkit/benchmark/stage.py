"""The `benchmark` stage: measure the teacher and every model artifact of the run, write the report.

``run(ctx)`` gathers inputs from the context; ``benchmark_models`` does the measuring and knows
nothing about recipes or stores, so tests and other programs call it directly. Gate verdicts
are data: the stage writes them into the report and its output, and the pipeline, after
committing the report, exits 3 when one failed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmkit.artifacts import artifact_hash
from slmkit.benchmark import gates as gates_mod
from slmkit.benchmark.quality import (
    METRICS,
    EvalSet,
    build_teacher_targets,
    evaluate,
    figure_directions,
    retained,
)
from slmkit.benchmark.results import (
    SCHEMA_VERSION,
    add_ratios,
    count_params,
    gate_figures,
    headline,
    size_on_disk,
)
from slmkit.context import StageOutput
from slmkit.errors import InputError
from slmkit.runtimes import FORMAT_BACKENDS, QUALITY_BACKEND, find_variants, load_lm, unavailable_reason

SKIP_KINDS = {"benchmark", "report", "dataset"}  # artifacts that hold no model


# ---------------------------------------------------------------- what to measure


def model_entries(teacher_dir: Path, artifacts: list[dict], only: list[str] | None) -> list[dict]:
    """The teacher first, then each model artifact in recipe order (optionally only the listed ids/stages)."""
    out = [{"id": "teacher", "role": "teacher", "stage": None, "kind": "teacher", "path": Path(teacher_dir)}]
    for a in artifacts:
        if a.get("kind") in SKIP_KINDS or (a.get("manifest") or {}).get("artifact_type") in SKIP_KINDS:
            continue
        if only is not None and a["id"] not in only and a.get("stage") not in only:
            continue
        out.append(
            {
                "id": a["id"],
                "role": "artifact",
                "stage": a.get("stage"),
                "kind": a.get("kind"),
                "path": Path(a["path"]),
            }
        )
    return out


def _describe_missing(path: Path) -> str:
    if not path.exists():
        return f"artifact directory {path} does not exist"
    return (
        f"no model files in {path}: expected config.json with *.safetensors, genai_config.json, "
        "or a *.gguf file"
    )


def speed_prompt(examples: list, tokenizer, length: int) -> list[int]:
    """A fixed-length prompt cut from the eval prompts, repeated as needed: same tokens for every model."""
    pool = [t for e in examples for t in (e.prompt_ids or e.input_ids)]
    if not pool:
        pool = tokenizer("The quick brown fox jumps over the lazy dog. ", add_special_tokens=False)[
            "input_ids"
        ]
    return [pool[i % len(pool)] for i in range(length)]


# ---------------------------------------------------------------- measuring


def _variant_quality(variant, ev: EvalSet | None, cfg, device: str) -> dict:
    """Quality figures of one variant on its reference backend, or the reason they are missing."""
    out = {"quality_backend": QUALITY_BACKEND[variant.format], "quality": {}, "quality_skipped": {}}
    if ev is None or not cfg.quality:
        out["quality_skipped"] = dict.fromkeys(cfg.quality, "no eval examples")
        return out
    reason = unavailable_reason(out["quality_backend"], device)
    if reason is None:
        try:
            lm = load_lm(variant, device=device, threads=cfg.speed.threads)
        except Exception as e:  # corrupted weights: a clear row, and the rest of the report still comes out
            reason = f"could not load {variant.path}: {type(e).__name__}: {e}"
    if reason is not None:
        out["quality_skipped"] = dict.fromkeys(cfg.quality, reason)
        out["quality"] = dict.fromkeys(figure_directions(cfg.quality))
        return out
    out["quality"], out["quality_skipped"] = evaluate(ev, lm, cfg.quality)
    return out


def _variant_speed(variant, prompt: list[int], cfg, scratch: Path, device: str) -> list[dict]:
    from slmkit.benchmark.speed import measure_backend, measure_isolated

    entries = []
    for backend in [b for b in cfg.speed.backends if b in FORMAT_BACKENDS[variant.format]]:
        base = {
            "model": variant.model_id,
            "format": variant.format,
            "backend": backend,
            "path": str(variant.path),
        }
        reason = unavailable_reason(backend, device)
        if reason:
            entries.append({**base, "status": "skipped", "reason": reason, "batches": []})
            continue
        try:
            if cfg.speed.isolate:
                entries.append(measure_isolated(variant, backend, prompt, cfg.speed, scratch / "speed"))
            else:
                entries.append(measure_backend(variant, backend, prompt, cfg.speed))
        except Exception as e:
            entries.append({**base, "status": "failed", "reason": f"{type(e).__name__}: {e}", "batches": []})
    return entries


def _measure_model(m: dict, ev, prompt, cfg, scratch: Path, device: str, log) -> tuple[dict, list[dict]]:
    variants = find_variants(m["id"], m["path"])
    doc = {k: (str(v) if isinstance(v, Path) else v) for k, v in m.items()}
    if not variants:
        return {**doc, "status": "failed", "reason": _describe_missing(m["path"]), "variants": []}, []
    doc.update(status="ok", reason=None, variants=[])
    speed = []
    for v in variants:
        log(f"benchmark: {m['id']} [{v.format}] quality")
        vd = {"format": v.format, "path": str(v.path), "size_bytes": size_on_disk(v.path)}
        try:
            vd["params"] = count_params(v.format, v.path)
        except Exception as e:
            vd["params"], vd["params_error"] = None, f"{type(e).__name__}: {e}"
        vd.update(_variant_quality(v, ev, cfg, device))
        doc["variants"].append(vd)
        log(f"benchmark: {m['id']} [{v.format}] speed")
        for e in _variant_speed(v, prompt, cfg, scratch, device):
            e["size_bytes"] = vd["size_bytes"]
            speed.append(e)
    return doc, speed


def _add_retained(models: list[dict], primary: str, directions: dict[str, bool]) -> None:
    """Per variant: each figure over the teacher's PyTorch figure; quality_retained on the primary one."""
    teacher = next((v for v in models[0].get("variants", []) if v["format"] == "hf"), None)
    tq = (teacher or {}).get("quality") or {}
    for m in models:
        for v in m.get("variants", []):
            q = v.get("quality") or {}
            v["retained"] = {
                f: retained(q.get(f), tq.get(f), up) for f, up in directions.items() if f != "teacher_kl"
            }  # the teacher's own KL is 0: no ratio exists
            v["quality_retained"] = v["retained"].get(primary)


def benchmark_models(
    models: list[dict],
    examples: list,
    tokenizer,
    cfg,
    scratch: Path,
    teacher_responses: Callable[[Any], list[list[int]]] | None = None,
    log: Callable[[str], None] = lambda _: None,
    recipe_name: str | None = None,
) -> dict:
    """Measure every model (the teacher first) and return the results document (schema in docs/benchmark.md).

    ``teacher_responses(teacher_lm)`` returns the teacher's greedy answers to the eval prompts
    (the stage caches them as a dataset artifact); by default they are generated here.
    """
    from slmkit.benchmark.speed import hardware_info
    from slmkit.runtimes.pytorch import resolve_device

    device = resolve_device(cfg.speed.device).type
    ev = (
        EvalSet(examples, tokenizer, cfg.max_new_tokens, cfg.eval_batch_size, config=cfg)
        if examples
        else None
    )
    if ev is not None and any(METRICS[m].needs_teacher_targets for m in cfg.quality):
        ev.targets = _teacher_targets(models[0], ev, scratch, teacher_responses, device)
    prompt = speed_prompt(examples, tokenizer, cfg.speed.prompt_tokens)
    docs, speed = [], []
    for m in models:
        doc, entries = _measure_model(m, ev, prompt, cfg, scratch, device, log)
        docs.append(doc)
        speed += entries
    directions = figure_directions(cfg.quality)
    _add_retained(docs, cfg.primary_metric, directions)
    final = next((d["id"] for d in reversed(docs[1:]) if d.get("variants")), None)
    results = {
        "schema_version": SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "recipe": recipe_name,
        "primary_metric": cfg.primary_metric,
        "primary_higher_is_better": directions[cfg.primary_metric],
        "teacher": "teacher",
        "final_model": final,
        "hardware": hardware_info(),
        "settings": cfg.model_dump(mode="json"),
        "speed_prompt_tokens": len(prompt),
        "eval_examples": len(examples),
        "models": docs,
        "speed": speed,
    }
    add_ratios(results)
    results["headline"] = headline(results)
    results["gates"] = gates_mod.evaluate_gates(cfg.parsed_gates, gate_figures(results))
    results["gates_passed"] = all(g["passed"] for g in results["gates"])
    return results


def _teacher_targets(teacher: dict, ev: EvalSet, scratch: Path, responses_fn, device: str):
    variants = [v for v in find_variants("teacher", teacher["path"]) if v.format == "hf"]
    if not variants:
        raise InputError(f"teacher {teacher['path']}: no Hugging Face checkpoint (config.json + safetensors)")
    lm = load_lm(variants[0], device=device)
    prompts = [e.prompt_ids for e in ev.examples]
    responses = responses_fn(lm) if responses_fn else generate_responses(lm, prompts, ev)
    return build_teacher_targets(lm, prompts, responses, scratch / "teacher_logits", ev.batch_size)


def generate_responses(lm, prompts: list[list[int]], ev: EvalSet) -> list[list[int]]:
    """The teacher's greedy answers (empty for examples without a prompt)."""
    out: list[list[int]] = [[] for _ in prompts]
    idx = [i for i, p in enumerate(prompts) if p]
    for lo in range(0, len(idx), ev.batch_size):
        chunk = idx[lo : lo + ev.batch_size]
        for i, ans in zip(chunk, lm.generate([prompts[i] for i in chunk], ev.max_new_tokens)):
            out[i] = ans
    return out


# ---------------------------------------------------------------- the stage


def _cached_responses(ctx, cfg, examples: list) -> Callable:
    """Teacher responses through ctx.dataset_artifact: generated once per (teacher, prompts, length)."""
    prompts = [e.prompt_ids for e in examples]
    key = {
        "teacher": artifact_hash(ctx.teacher_dir),
        "max_new_tokens": cfg.max_new_tokens,
        "prompts": hashlib.sha256(json.dumps(prompts).encode()).hexdigest(),
    }

    def responses(lm) -> list[list[int]]:
        def build(tmp: Path) -> dict:
            ev = EvalSet(examples, None, cfg.max_new_tokens, cfg.eval_batch_size)
            data = generate_responses(lm, prompts, ev)
            (tmp / "responses.json").write_text(json.dumps(data))
            return {"responses": len(data), "tokens": sum(map(len, data))}

        path = ctx.dataset_artifact("teacher_responses", key, build)
        return json.loads((Path(path) / "responses.json").read_text())

    return responses


def _copy_layer_importance(models: list[dict], out_dir: Path) -> None:
    for m in models:
        png = Path(m["path"]) / "layer_importance.png"
        if png.is_file():
            name = f"layer_importance_{m['id'].replace('/', '_')}.png"
            (out_dir / name).write_bytes(png.read_bytes())
            m["layer_importance_png"] = name


def run(ctx) -> StageOutput:
    from transformers import AutoTokenizer

    cfg = ctx.stage.config
    models = model_entries(ctx.teacher_dir, ctx.extras.get("artifacts", []), cfg.models)
    tokenizer = AutoTokenizer.from_pretrained(ctx.teacher_dir)
    examples = ctx.examples("eval", tokenizer)[: cfg.eval_samples] if cfg.quality else []
    with tempfile.TemporaryDirectory(prefix="slmkit-bench-") as tmp:
        scratch = Path(ctx.work_dir) if ctx.work_dir else Path(tmp)
        results = benchmark_models(models, examples, tokenizer, cfg, scratch, _cached_responses(ctx, cfg, examples),
                                   ctx.reporter.info, getattr(ctx.recipe, "name", None))
    return finish(ctx, results, models)


def finish(ctx, results: dict, models: list[dict]) -> StageOutput:
    """Write the report (results.json, report.md, report.html) and hand back the headline and the gates."""
    from slmkit.benchmark.report import write_report

    _copy_layer_importance(models, ctx.out_dir)
    for doc, m in zip(results["models"], models):
        doc["layer_importance_png"] = m.get("layer_importance_png")
    write_report(results, ctx.out_dir)
    _print_table(results)
    return StageOutput(metrics=dict(results["headline"]), details={"gates": results["gates"]},
                       artifact_type="report")


def _print_table(results: dict) -> None:
    from rich.console import Console

    from slmkit.benchmark.report import rich_table

    # stderr: stdout is reserved for `--json`, which prints results.json there
    Console(stderr=True).print(rich_table(results))
