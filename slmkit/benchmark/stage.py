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
    MetricSkipped,
    build_teacher_targets,
    evaluate,
    figure_directions,
    greedy_answers,
    judge_answers,
    retained,
)
from slmkit.benchmark.results import (
    SCHEMA_VERSION,
    add_ratios,
    count_params,
    gate_figures,
    gate_reasons,
    headline,
    size_on_disk,
)
from slmkit.benchmark.stats import PerExample, figure_value
from slmkit.benchmark.uncertainty import add_intervals, baseline_entry, finalize_retention
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
    """Quality figures of one variant on its reference backend, or the reason they are missing.

    ``_answers`` (popped by the caller, not written) keeps the variant's greedy answers for the
    figures the teacher judges once every model has answered.
    """
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
    known = ev.extras.get("teacher_answers") if variant.model_id == "teacher" and variant.format == "hf" else None
    if known:
        ev.answers(lm, known=known)  # the teacher's cached responses are its answers: not generated twice
    out["quality"], out["quality_skipped"], per_example = evaluate(ev, lm, cfg.quality)
    out["per_example"] = {f: pe.to_dict() for f, pe in per_example.items()}
    if any(METRICS[m].judged for m in cfg.quality) and any(e.prompt_ids for e in ev.examples):
        out["_answers"] = ev.answers(lm)
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


def _measure_model(m: dict, ev, prompt, cfg, scratch: Path, device: str, log, answers: dict
                   ) -> tuple[dict, list[dict]]:
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
        if "_answers" in vd:
            answers[(m["id"], v.format)] = vd.pop("_answers")
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
    general: list | None = None,
    train_examples: list | None = None,
) -> dict:
    """Measure every model (the teacher first) and return the results document (schema in docs/benchmark.md).

    ``teacher_responses(teacher_lm)`` returns the teacher's greedy answers to the eval prompts
    (the stage caches them as a dataset artifact); by default they are generated here.
    ``general``: packed blocks of general text (general_perplexity); ``train_examples``: the
    training data, which the unigram perplexity baseline is fitted on.
    """
    from slmkit.benchmark.speed import hardware_info
    from slmkit.runtimes.pytorch import resolve_device

    device = resolve_device(cfg.speed.device).type
    ev = (
        EvalSet(examples, tokenizer, cfg.max_new_tokens, cfg.eval_batch_size, config=cfg, general=general or [])
        if examples
        else None
    )
    if ev is not None and any(METRICS[m].needs_teacher_targets for m in cfg.quality):
        ev.targets = _teacher_targets(models[0], ev, scratch, teacher_responses, device)
    prompt = speed_prompt(examples, tokenizer, cfg.speed.prompt_tokens)
    docs, speed, answers = [], [], {}
    for m in models:
        doc, entries = _measure_model(m, ev, prompt, cfg, scratch, device, log, answers)
        docs.append(doc)
        speed += entries
    directions = figure_directions(cfg.quality)
    baselines = {}
    if ev is not None:
        teacher_lm = _judge(docs, ev, answers, models[0], device, log) if answers else None
        baselines = generation_baselines(ev, cfg, train_examples or [], teacher_lm, directions)
    _add_retained(docs, cfg.primary_metric, directions)
    add_intervals(docs, directions, baselines)
    finalize_retention(docs, cfg.primary_metric, baselines)
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
        "baselines": baselines,
    }
    add_ratios(results)
    results["headline"] = headline(results)
    results["gates"] = gates_mod.evaluate_gates(cfg.parsed_gates, gate_figures(results), gate_reasons(results))
    results["gates_passed"] = all(g["passed"] for g in results["gates"])
    return results


def _teacher_targets(teacher: dict, ev: EvalSet, scratch: Path, responses_fn, device: str):
    variants = [v for v in find_variants("teacher", teacher["path"]) if v.format == "hf"]
    if not variants:
        raise InputError(f"teacher {teacher['path']}: no Hugging Face checkpoint (config.json + safetensors)")
    lm = load_lm(variants[0], device=device)
    prompts = [e.prompt_ids for e in ev.examples]
    responses = responses_fn(lm) if responses_fn else greedy_answers(lm, prompts, ev.max_new_tokens, ev.batch_size)
    ev.extras["teacher_answers"] = responses
    ids = [e.source or str(i) for i, e in enumerate(ev.examples)]
    return build_teacher_targets(lm, prompts, responses, scratch / "teacher_logits", ev.batch_size, ids)


def _judge(docs: list[dict], ev: EvalSet, answers: dict, teacher: dict, device: str, log):
    """The teacher scores every variant's answers (answer_likelihood); returns the teacher LM it loaded."""
    variant = next(v for v in find_variants("teacher", teacher["path"]) if v.format == "hf")
    log("benchmark: the teacher judges every model's answers (answer_likelihood)")
    lm = load_lm(variant, device=device)
    for doc in docs:
        for vd in doc.get("variants", []):
            given = answers.get((doc["id"], vd["format"]))
            if given is None:
                continue
            try:
                pe = judge_answers(lm, ev, given)
            except MetricSkipped as e:
                vd["quality_skipped"]["answer_likelihood"] = str(e)
                continue
            vd["quality"]["answer_likelihood"] = figure_value(pe)
            vd["per_example"]["answer_likelihood"] = pe.to_dict()
    return lm


def generation_baselines(ev: EvalSet, cfg, train: list, teacher_lm, directions: dict) -> dict[str, dict]:
    """Trivial-answer and unigram baselines of the generation figures the benchmark measures.

    Task figures and answer_likelihood: the first sentence of each prompt's question given as the
    answer; perplexity: a unigram model fitted (add-one) on the training data's target tokens.
    """
    from slmkit.benchmark import baselines as B

    out: dict[str, dict] = {}
    asked = [i for i, e in enumerate(ev.examples) if e.prompt_ids and e.question]
    ids = [e.source or str(i) for i, e in enumerate(ev.examples)]
    trivial = {i: B.first_sentence(ev.examples[i].question) for i in asked}
    what = "the first sentence of the question, given as the answer"
    refs = [i for i in asked if ev.examples[i].reference is not None]
    if refs and "rouge_l" in directions:
        scores = B.answer_scores([trivial[i] for i in refs], [ev.examples[i].reference for i in refs])
        for name, values in scores.items():
            out[name] = baseline_entry(PerExample.of_values(values, [ids[i] for i in refs]), name, what)
    if teacher_lm is not None and asked and "answer_likelihood" in directions:
        eos = sorted(getattr(teacher_lm, "eos", []))[:1]
        given = [ev.tokenizer(trivial[i], add_special_tokens=False)["input_ids"] + eos if i in trivial else []
                 for i in range(len(ev.examples))]
        pe = judge_answers(teacher_lm, ev, given)
        out["answer_likelihood"] = baseline_entry(pe, "answer_likelihood", what)
    if train and "perplexity" in directions:
        out.update(_unigram_baseline(ev, train, ids))
    return out


def _unigram_baseline(ev: EvalSet, train: list, ids: list[str]) -> dict[str, dict]:
    from slmkit.benchmark import baselines as B

    def targets(e) -> list[int]:
        return [t for t, m in zip(e.input_ids[1:], e.loss_mask[1:]) if m]

    vocab = max(len(ev.tokenizer), 1 + max(max(e.input_ids, default=0) for e in [*train, *ev.examples]))
    train_ids = [t for e in train for t in targets(e)]
    keep = [i for i, e in enumerate(ev.examples) if targets(e)]
    if not train_ids or not keep:
        return {}
    nll, counts = B.unigram_nll(train_ids, [targets(ev.examples[i]) for i in keep], vocab)
    pe = PerExample(nll, counts, [ids[i] for i in keep])
    return {"perplexity": baseline_entry(pe, "perplexity", "a unigram model fitted on the training targets")}


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
            data = greedy_answers(lm, prompts, cfg.max_new_tokens, cfg.eval_batch_size)
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
    if cfg.lm_eval_include_path:  # local lm-eval task files are relative to the recipe, like data files
        from slmkit.data import resolve_data_path

        include = resolve_data_path(cfg.lm_eval_include_path, ctx.recipe_dir)
        cfg = cfg.model_copy(update={"lm_eval_include_path": str(include)})
    models = model_entries(ctx.teacher_dir, ctx.extras.get("artifacts", []), cfg.models)
    tokenizer = AutoTokenizer.from_pretrained(ctx.teacher_dir)
    examples = ctx.examples("eval", tokenizer)[: cfg.eval_samples] if cfg.quality else []
    train = ctx.examples("train", tokenizer) if ctx.recipe.data.train is not None and "perplexity" in cfg.quality else []
    with tempfile.TemporaryDirectory(prefix="slmkit-bench-") as tmp:
        scratch = Path(ctx.work_dir) if ctx.work_dir else Path(tmp)
        results = benchmark_models(models, examples, tokenizer, cfg, scratch, _cached_responses(ctx, cfg, examples),
                                   ctx.reporter.info, getattr(ctx.recipe, "name", None),
                                   general=general_blocks(cfg, tokenizer, ctx.recipe_dir), train_examples=train)
    return finish(ctx, results, models)


def general_blocks(cfg, tokenizer, base_dir: Path) -> list:
    """The first ``general_text_blocks`` blocks of 256 tokens of the general text (empty when off)."""
    if cfg.general_text is None or "general_perplexity" not in cfg.quality:
        return []
    from slmkit.data import pack_text, read_local_rows, resolve_data_path

    rows, where = read_local_rows(resolve_data_path(cfg.general_text, base_dir))
    return pack_text(rows, "text", tokenizer, 256, where)[: cfg.general_text_blocks]


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
    import sys

    from slmkit.benchmark.report import rich_table
    from slmkit.progress import print_table

    # stderr: stdout is reserved for `--json`, which prints results.json there
    print_table(rich_table(results), sys.stderr)
