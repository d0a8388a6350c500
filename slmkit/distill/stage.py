"""The distill stage: ``run(ctx) -> StageOutput``. Checks inputs, picks the data mode, trains, saves."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from slmkit.artifacts import artifact_hash
from slmkit.context import StageContext, StageOutput
from slmkit.data import Example
from slmkit.distill.config import DistillConfig
from slmkit.errors import InputError

# --- input checks (all before any weights are loaded into training) ---------------------------


def shared_vocab(teacher_tok, student_tok, teacher_rows: int, student_rows: int) -> int:
    """Rows of the lm_heads the loss compares. Padding-only differences are aligned; real ones are errors."""
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise InputError(
            "distill: the teacher and student tokenizers differ (different vocabularies), so their "
            "next-token distributions are not comparable token by token; set loss.cross_tokenizer: align "
            "(or uld) to distill across tokenizers, or use a student built from the teacher's tokenizer"
        )
    rows = min(teacher_rows, student_rows)
    if len(teacher_tok) > rows:
        raise InputError(f"distill: the tokenizer has {len(teacher_tok)} tokens but an lm_head has only {rows} rows")
    return rows  # e.g. 151936 vs 152064: the extra rows are padding no token id reaches


def check_trainable(model, where: str) -> None:
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise InputError(f"distill: {where} has no lm_head; the loop trains causal LMs only")
    if getattr(model, "base_model", model) is model:
        raise InputError(f"distill: {where} ({type(model).__name__}) has no separate decoder the loop can run")


def apply_token_mode(examples: list[Example], mode: str, where: str) -> list[Example]:
    """Set which tokens count and drop examples with none; error when nothing is left."""
    if mode == "all":
        examples = [Example(e.input_ids, [1] * len(e.input_ids), e.prompt_ids, e.source, e.reference, e.question)
                    for e in examples]
    elif mode == "response" and not any(e.prompt_ids for e in examples):
        raise InputError(f"distill: loss.tokens is 'response' but {where} has no prompts (text data): use 'all'")
    kept = [e for e in examples if sum(e.loss_mask[1:]) > 0]
    if not kept:
        raise InputError(
            f"distill: no response tokens left in {where} after masking (and truncation to max_length); "
            "check the data format, max_length, or set loss.tokens: all"
        )
    return kept


def estimate_bytes(cfg: DistillConfig, s_config, s_params: int, t_params: int, offline: bool) -> int:
    """Rough peak: fp32 student + grads + AdamW, teacher weights, activations, one logits chunk."""
    bf16 = cfg.precision == "bf16"
    teacher = 0 if offline else t_params * (2 if bf16 else 4)
    tokens = cfg.batch_size * cfg.max_length
    h, i, n = s_config.hidden_size, getattr(s_config, "intermediate_size", 4 * s_config.hidden_size), s_config.num_hidden_layers
    per_layer = (2 * h if cfg.gradient_checkpointing else 12 * h + 4 * i) * (2 if bf16 else 4)
    logits = 6 * cfg.loss.chunk_size * s_config.vocab_size * 4
    return s_params * 16 + teacher + tokens * n * per_layer + logits


def check_memory(cfg: DistillConfig, need: int, device: torch.device) -> None:
    if not cfg.memory_check:
        return
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    if need > free:
        raise InputError(
            f"distill: a micro-batch of {cfg.batch_size} x {cfg.max_length} tokens needs about "
            f"{need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is free on {device.type}; lower batch_size "
            "(raise grad_accum to keep the global batch), enable gradient_checkpointing, or lower max_length "
            "(memory_check: false skips this check)"
        )


# --- data modes -------------------------------------------------------------------------------


def _examples_key(examples: list[Example]) -> str:
    return hashlib.sha256(json.dumps([e.input_ids for e in examples]).encode()).hexdigest()


def write_examples(path: Path, examples: list[Example]) -> None:
    with path.open("w") as f:
        for e in examples:
            f.write(json.dumps({"input_ids": e.input_ids, "loss_mask": e.loss_mask, "prompt_ids": e.prompt_ids,
                                "source": e.source}) + "\n")


def read_examples(path: Path) -> list[Example]:
    return [Example(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def sequence_kd_examples(ctx: StageContext, cfg: DistillConfig, teacher, tok, train, t_hash,
                         details: dict | None = None) -> list[Example]:
    """The teacher's answers to the training prompts, generated once (a dataset artifact) and reused.

    ``details`` receives the generation's token count and rate (from the dataset's manifest when reused).
    """
    import time

    from slmkit.artifacts import read_manifest
    from slmkit.distill.generate import generate_responses, require_prompts

    require_prompts(train, "data: sequence_kd")
    g = cfg.sequence_kd

    def build(tmp: Path) -> dict:
        ctx.reporter.info(f"distill: the teacher generates responses for {len(train)} prompts (sequence-level KD)")
        started = time.perf_counter()
        with ctx.reporter.progress(len(train), "distill: teacher responses") as bar:
            out = generate_responses(teacher, train, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                                     max_new_tokens=g.max_new_tokens, do_sample=g.do_sample,
                                     temperature=g.temperature, top_p=g.top_p, batch_size=g.batch_size,
                                     dtype=g.dtype, on_batch=bar.advance)
        write_examples(tmp / "examples.jsonl", out)
        tokens, seconds = sum(sum(e.loss_mask) for e in out), time.perf_counter() - started
        return {"examples": len(out), "response_tokens": tokens, "generate_seconds": round(seconds, 2),
                "generated_tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}

    key = {"teacher": t_hash, "data": _examples_key(train), "generation": g.model_dump(), "seed": ctx.recipe.seed}
    path = ctx.dataset_artifact("distill-seqkd", key, build)
    if details is not None:
        made = read_manifest(path).get("metrics", {})
        details["sequence_kd"] = {k: made.get(k) for k in ("response_tokens", "generate_seconds",
                                                            "generated_tokens_per_s")}
    return read_examples(path / "examples.jsonl")


def offline_caches(ctx, cfg: DistillConfig, teacher, tok, vocab, splits: dict, t_hash):
    """Build (or reuse) the teacher top-k cache of each split; returns {split: TopKCache}.

    The caches are content-addressed and shared by every recipe under the same output directory
    (``<output_dir>/_shared/teacher-topk/v<N>``): keyed by the teacher's content hash, its tokenizer,
    the examples' tokens and masks, k, the temperature, the format and the teacher's precision, so
    another student, another epoch count or another recipe over the same data reads the same cache.
    """
    from slmkit.artifacts import Store
    from slmkit.distill.teacher_cache import TopKCache, build_cache, data_fingerprint, tokenizer_fingerprint
    from slmkit.distill.trainer import use_layer_compile

    c, dtype = cfg.teacher_cache, torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    shared = Store(ctx.run_dir.parent / "_shared")
    caches = {}
    for split, exs in splits.items():
        # training matches the teacher at the loss temperature; eval KL is measured at T = 1, as it
        # is against a live teacher, so the eval cache holds the untempered distribution
        temperature = cfg.loss.temperature if split == "train" else 1.0

        def build(tmp: Path, exs=exs, split=split, temperature=temperature) -> dict:
            ctx.reporter.info(f"distill: caching the teacher's top-{c.top_k} log-probs ({c.format}) for {len(exs)} "
                              f"{split} examples (T={temperature:g})")
            return build_cache(tmp, teacher, exs, pad_id=tok.pad_token_id, vocab=vocab, k=c.top_k,
                               temperature=temperature, batch_size=c.batch_size,
                               shard_examples=c.shard_examples, device=ctx.device, dtype=dtype, format=c.format,
                               compile_layers=use_layer_compile(cfg, vocab, ctx.device, 1),
                               pack=cfg.packing is not False)

        key = {"teacher": t_hash, "tokenizer": tokenizer_fingerprint(tok), "data": data_fingerprint(exs),
               "vocab": vocab, "top_k": c.top_k, "temperature": temperature, "format": c.format,
               "teacher_dtype": str(dtype).removeprefix("torch.")}
        caches[split] = TopKCache(shared.dataset("teacher-topk", key, build, reporter=ctx.reporter))
    return caches


def cache_details(caches: dict, teacher, train: list[Example], cfg: DistillConfig, *, steps: int, processes: int,
                  seed: int) -> dict:
    """Which caches a student was trained from, their bytes per token and the teacher FLOPs not spent."""
    from slmkit.artifacts import read_manifest
    from slmkit.distill.flops import teacher_flops_avoided

    flops = teacher_flops_avoided(teacher, train, steps=steps, global_batch=cfg.batch_size * cfg.grad_accum
                                  * processes, seed=seed)
    out = {split: read_manifest(c.path)["id"] for split, c in caches.items()}
    return out | {"format": cfg.teacher_cache.format, "bytes_per_token": caches["train"].bytes_per_token,
                  "teacher_flops_avoided": flops}


def on_policy_sampler(cfg: DistillConfig, tok, stats: dict | None = None):
    """The student's samples for on-policy steps; ``stats`` accumulates tokens generated and seconds."""
    import time

    from slmkit.distill.generate import generate_responses

    p = cfg.on_policy
    stats = {} if stats is None else stats

    def sample(student, examples, step):
        started = time.perf_counter()
        out = generate_responses(student, examples, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                                 max_new_tokens=p.max_new_tokens, do_sample=p.do_sample,
                                 temperature=p.temperature, batch_size=cfg.batch_size, dtype=p.dtype)
        stats["generated_tokens"] = stats.get("generated_tokens", 0) + sum(sum(e.loss_mask) for e in out)
        stats["generate_seconds"] = stats.get("generate_seconds", 0.0) + time.perf_counter() - started
        return out

    return sample


# --- the stage ------------------------------------------------------------------------------


def _load(ctx: StageContext, cfg: DistillConfig):
    from slmkit.models import count_params, load_model, load_tokenizer

    if ctx.input_dir is None:
        raise InputError("distill: no student: give `student:` in the recipe or put a stage before distill")
    t_tok, s_tok = load_tokenizer(ctx.teacher_dir), load_tokenizer(ctx.input_dir)
    from transformers import AutoConfig

    t_cfg, s_cfg = AutoConfig.from_pretrained(ctx.teacher_dir), AutoConfig.from_pretrained(ctx.input_dir)
    vocab = shared_vocab(t_tok, s_tok, t_cfg.vocab_size, s_cfg.vocab_size)
    student = load_model(ctx.input_dir, "float32", "cpu")  # fp32 master weights
    teacher = load_model(ctx.teacher_dir, "float32", "cpu")
    check_trainable(student, f"the student at {ctx.input_dir}")
    check_trainable(teacher, f"the teacher at {ctx.teacher_dir}")
    s_n, t_n = count_params(student), count_params(teacher)
    if s_n > t_n:
        ctx.reporter.warn(f"distill: the student ({s_n:,} params) is larger than the teacher ({t_n:,})")
    return student, teacher, s_tok, vocab, s_n, t_n


def run(ctx: StageContext) -> StageOutput:
    from slmkit.distill.trainer import DistillJob, train

    cfg: DistillConfig = ctx.stage.config
    from slmkit.distill import cross_stage

    if cross_stage.wanted(cfg) and cross_stage.tokenizers_differ(ctx):
        return cross_stage.run(ctx)
    student, teacher, tok, vocab, s_n, t_n = _load(ctx, cfg)
    train_ex = apply_token_mode(ctx.examples("train", tok, cfg.max_length), cfg.loss.tokens, "data.train")
    eval_ex = []
    if ctx.recipe.data.eval is not None:
        eval_ex = apply_token_mode(ctx.examples("eval", tok, cfg.max_length), cfg.loss.tokens, "data.eval")
    eval_ex = eval_ex[: cfg.eval_examples]
    offline = cfg.data == "offline_teacher"
    check_memory(cfg, estimate_bytes(cfg, student.config, s_n, t_n, offline), ctx.device)
    t_hash = artifact_hash(ctx.teacher_dir)
    details: dict = {"data": cfg.data, "student_params": s_n, "teacher_params": t_n, "vocab_rows": vocab}
    if cfg.data == "sequence_kd":
        train_ex = sequence_kd_examples(ctx, cfg, teacher.to(ctx.device), tok, train_ex, t_hash, details)
    job = DistillJob(student, teacher, train_ex, eval_ex, tok.pad_token_id, vocab, cfg,
                     ctx.work_dir or ctx.out_dir.parent / f".{ctx.out_dir.name}-work", ctx.recipe.seed,
                     reporter=ctx.reporter, cpu=ctx.device.type == "cpu")
    if offline:
        caches = offline_caches(ctx, cfg, teacher.to(ctx.device), tok, vocab, {"train": train_ex, "eval": eval_ex}, t_hash)
        job.teacher, job.topk_train, job.topk_eval = None, caches["train"], caches["eval"] if eval_ex else None
        from slmkit.distill.flops import model_shape

        t_shape = model_shape(teacher)
        del teacher  # the point of the cache: training never holds the teacher
    sampled: dict = {}
    if cfg.on_policy.fraction > 0:
        job.sampler = on_policy_sampler(cfg, tok, sampled)
    result = train(job)
    if sampled:
        rate = sampled["generated_tokens"] / max(sampled["generate_seconds"], 1e-9)
        details["on_policy"] = {"generated_tokens": sampled["generated_tokens"],
                                "generate_seconds": round(sampled["generate_seconds"], 2),
                                "generated_tokens_per_s": round(rate, 1)}
    if offline:
        sec = caches["train"].seconds_per_token * result.extra["tokens_trained"]
        details["teacher_seconds_saved"] = round(sec, 2)
        details["teacher_cache"] = cache_details(caches, t_shape, train_ex, cfg, steps=result.steps,
                                                processes=result.extra["processes"], seed=ctx.recipe.seed)
        ctx.reporter.info(f"distill: the offline cache saved about {sec:.1f} s of teacher compute")
    return _finish(ctx, job, tok, result, details)


def _finish(ctx: StageContext, job, tok, result, details: dict) -> StageOutput:
    from slmkit.models import save_model

    save_model(job.student, tok, ctx.out_dir)
    shutil.copy(result.history_path, ctx.out_dir / "metrics.jsonl")
    final = {k: v for k, v in result.final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    seconds, tokens = result.extra["train_seconds"], result.extra["tokens_trained"]
    details.update(steps=result.steps, resumed_from=result.resumed_from, train_seconds=round(seconds, 2),
                   tokens_trained=int(tokens), trained_tokens_per_s=round(tokens / max(seconds, 1e-9), 1))
    notes = [f"Distilled for {result.steps} steps ({job.cfg.loss.kind}, data: {job.cfg.data})."]
    return StageOutput(metrics=final, details=details, model_card_notes=notes)
