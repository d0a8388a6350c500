"""The distill stage when the teacher and the student tokenize differently (``loss.cross_tokenizer``).

Each training row is tokenized by both models from the same text (``cross_data``); a batch
carries the teacher's tokens beside the student's; the teacher runs on its own tokens and its
hidden states at the aligned positions go to the chunked lm_head loss as a
``cross_tokenizer.CrossTeacher``. With ``data: sequence_kd`` the teacher's answers are decoded
to text first, so both models see the same answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from slmkit.context import StageContext, StageOutput
from slmkit.data import Example, collate, read_rows
from slmkit.distill import cross_data as X
from slmkit.distill.config import DistillConfig
from slmkit.distill.cross_tokenizer import EXACT, NONE, ULD, CrossTeacher, SharedVocab
from slmkit.errors import InputError

# --- batches ---------------------------------------------------------------------------------


@dataclass
class CrossBatch:
    tensors: dict[str, torch.Tensor]  # the teacher's input_ids / attention_mask
    rows: torch.Tensor  # [N] flat teacher row of each selected student row (0 where unaligned)
    kind: torch.Tensor  # [N] NONE / ULD / EXACT


def pair_rows(examples: list[X.PairedExample], student_width: int, teacher_width: int):
    """Per selected student row (the trainer's ``select_targets`` order): teacher flat row and kind."""
    rows, kinds = [], []
    for b, e in enumerate(examples):
        by_pos = {p.student: p for p in e.pairs}
        for t in range(min(len(e.input_ids), student_width) - 1):
            if not e.loss_mask[t + 1]:
                continue
            p = by_pos.get(t)
            ok = p is not None and p.teacher + 1 < len(e.teacher_ids)
            rows.append(b * teacher_width + p.teacher if ok else 0)
            kinds.append((EXACT if p.exact else ULD) if ok else NONE)
    return rows, kinds


@dataclass
class CrossTokenizer:
    """What the trainer needs to distill across vocabularies (``DistillJob.cross``)."""

    mode: str
    pad_id: int  # the teacher's
    teacher_vocab: int  # rows of the teacher's lm_head
    shared: SharedVocab | None
    stats: dict = field(default_factory=dict)

    def batch(self, examples, student_batch, device) -> CrossBatch:
        t_ex = [Example(e.teacher_ids, [0] * len(e.teacher_ids)) for e in examples]
        tensors = {k: v.to(device) for k, v in collate(t_ex, self.pad_id).items() if k != "loss_mask"}
        rows, kinds = pair_rows(examples, student_batch.tensors["input_ids"].shape[1], tensors["input_ids"].shape[1])
        if student_batch.sel.numel() != len(rows):
            raise AssertionError("cross-tokenizer rows out of step with the student's selected rows")
        if not any(kinds):
            raise InputError(f"distill: loss.cross_tokenizer: {self.mode} cannot align any position of a batch "
                             f"(examples {', '.join(e.source for e in examples)})")
        return CrossBatch(tensors, torch.tensor(rows, device=device), torch.tensor(kinds, device=device))

    @torch.no_grad()
    def teacher_rows(self, teacher, cb: CrossBatch) -> CrossTeacher:
        out = teacher.base_model(input_ids=cb.tensors["input_ids"], attention_mask=cb.tensors["attention_mask"],
                                 use_cache=False)
        h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])[cb.rows]
        head = teacher.get_output_embeddings()
        bias = None if head.bias is None else head.bias[: self.teacher_vocab]
        if self.shared is not None and self.shared.teacher.device != h.device:
            self.shared = SharedVocab(*(None if t is None else t.to(h.device) for t in vars(self.shared).values()))
        return CrossTeacher(h, head.weight[: self.teacher_vocab], cb.kind, self.mode, self.shared, bias, self.stats)

    def summary(self) -> dict:
        s = self.stats
        out = {"uld_rows": s.get("uld_rows", 0), "shared_vocab_rows": s.get("shared_rows", 0)}
        if s.get("shared_rows"):
            out["teacher_mass_on_shared"] = round(s["shared_mass"] / s["shared_rows"], 4)
        return out


# --- the stage -------------------------------------------------------------------------------


def text_only(cfg: DistillConfig) -> bool:
    """Sequence-level KD alone (the teacher's answers, no logit term): it passes text, so any tokenizers do."""
    return (cfg.data == "sequence_kd" and cfg.loss.kd_weight == 0 and cfg.loss.hidden is None
            and cfg.on_policy.fraction == 0)


def wanted(cfg: DistillConfig) -> bool:
    """Whether this stage may run across tokenizers (when they differ)."""
    return cfg.loss.cross_tokenizer is not None or text_only(cfg)


def tokenizers_differ(ctx: StageContext) -> bool:
    """True when the vocabularies differ; a warning when cross_tokenizer is set on the same tokenizer."""
    from slmkit.models import load_tokenizer

    if ctx.input_dir is None:
        return False  # stage.run reports the missing student
    same = load_tokenizer(ctx.teacher_dir).get_vocab() == load_tokenizer(ctx.input_dir).get_vocab()
    if same and ctx.stage.config.loss.cross_tokenizer is not None:
        ctx.reporter.warn(f"distill: loss.cross_tokenizer: {ctx.stage.config.loss.cross_tokenizer} is set but the "
                          "teacher and the student share one tokenizer; training with the same-vocabulary loss "
                          f"({ctx.stage.config.loss.kind}), which compares every token exactly")
    return not same


def _rows(ctx: StageContext, split: str) -> tuple[list[dict], object, str]:
    spec = getattr(ctx.recipe.data, split)
    rows, where = read_rows(spec, ctx.recipe_dir)
    return rows, spec, f"data.{split} ({where})"


def _teacher_answers(ctx: StageContext, cfg: DistillConfig, teacher, t_tok, rows, spec, t_hash) -> list[dict]:
    """Sequence-level KD across tokenizers: the teacher's answers as text (a dataset artifact, reused)."""
    from slmkit.data import load_examples
    from slmkit.distill.generate import generate_responses, require_prompts
    from slmkit.distill.stage import _examples_key

    prompts = load_examples(spec, t_tok, max_length=cfg.max_length, base_dir=ctx.recipe_dir)
    require_prompts(prompts, "data: sequence_kd")
    g = cfg.sequence_kd

    def build(tmp: Path) -> dict:
        ctx.reporter.info(f"distill: the teacher answers {len(prompts)} prompts (sequence-level KD, as text)")
        with ctx.reporter.progress(len(prompts), "distill: teacher responses") as bar:
            out = generate_responses(teacher.to(ctx.device), prompts, pad_id=pad_id(t_tok),
                                     eos_id=t_tok.eos_token_id, max_new_tokens=g.max_new_tokens,
                                     do_sample=g.do_sample, temperature=g.temperature, top_p=g.top_p,
                                     batch_size=g.batch_size, dtype=g.dtype, on_batch=bar.advance)
        texts = [t_tok.decode([i for i, m in zip(e.input_ids, e.loss_mask) if m], skip_special_tokens=True)
                 for e in out]
        (tmp / "answers.jsonl").write_text("".join(json.dumps({"answer": t}) + "\n" for t in texts))
        return {"examples": len(texts)}

    key = {"teacher": t_hash, "data": _examples_key(prompts), "generation": g.model_dump(), "seed": ctx.recipe.seed,
           "as": "text"}
    path = ctx.dataset_artifact("distill-seqkd-text", key, build)
    answers = [json.loads(line)["answer"] for line in (path / "answers.jsonl").read_text().splitlines()]
    return [with_answer(row, spec, a) for row, a in zip(rows, answers, strict=True)]


def with_answer(row: dict, spec, answer: str) -> dict:
    """The row with its (last) answer replaced by ``answer``."""
    if spec.format == "prompt_completion":
        return {**row, spec.completion_field: answer}
    messages = list(row[spec.messages_field])
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return {**row, spec.messages_field: messages[:last] + [{"role": "assistant", "content": answer}]}


def pad_id(tok) -> int:
    """The id padding uses (EOS, or 0, for a tokenizer without a pad token): padded rows are masked."""
    for i in (tok.pad_token_id, tok.eos_token_id):
        if i is not None:
            return i
    return 0


def _load(ctx: StageContext):
    from transformers import AutoConfig

    from slmkit.distill.stage import check_trainable
    from slmkit.models import count_params, load_model, load_tokenizer

    t_tok, s_tok = load_tokenizer(ctx.teacher_dir), load_tokenizer(ctx.input_dir)
    for tok, who in ((t_tok, "teacher"), (s_tok, "student")):
        if not tok.is_fast:
            raise InputError(f"distill: loss.cross_tokenizer needs character offsets: the {who}'s tokenizer is not a "
                             "fast (tokenizers-backed) tokenizer")
    student, teacher = load_model(ctx.input_dir, "float32", "cpu"), load_model(ctx.teacher_dir, "float32", "cpu")
    check_trainable(student, f"the student at {ctx.input_dir}")
    check_trainable(teacher, f"the teacher at {ctx.teacher_dir}")
    t_rows = AutoConfig.from_pretrained(ctx.teacher_dir).vocab_size
    return student, teacher, t_tok, s_tok, t_rows, count_params(student), count_params(teacher)


def run(ctx: StageContext) -> StageOutput:
    from slmkit.artifacts import artifact_hash
    from slmkit.distill.stage import _finish, check_memory, estimate_bytes
    from slmkit.distill.trainer import DistillJob, train

    cfg: DistillConfig = ctx.stage.config
    mode = cfg.loss.cross_tokenizer
    student, teacher, t_tok, s_tok, t_rows, s_n, t_n = _load(ctx)
    rows, spec, where = _rows(ctx, "train")
    if cfg.data == "sequence_kd":
        rows = _teacher_answers(ctx, cfg, teacher, t_tok, rows, spec, artifact_hash(ctx.teacher_dir))
    train_ex = X.paired_examples(rows, spec, t_tok, s_tok, cfg.max_length, where)
    eval_ex = []
    if ctx.recipe.data.eval is not None:  # the student's own cross-entropy on held-out answers
        from slmkit.distill.stage import apply_token_mode

        eval_ex = apply_token_mode(ctx.examples("eval", s_tok, cfg.max_length), cfg.loss.tokens, "data.eval")
    check_memory(cfg, estimate_bytes(cfg, student.config, s_n, t_n, mode is None), ctx.device)
    details = {"data": cfg.data, "student_params": s_n, "teacher_params": t_n,
               "vocab_rows": student.config.vocab_size}
    cross = None
    if mode is None:  # sequence-level KD alone: the student learns the teacher's answers as text
        from slmkit.distill.stage import apply_token_mode

        train_ex, teacher = apply_token_mode(train_ex, cfg.loss.tokens, where), None
        details["tokenizers"] = "different: trained on the teacher's answers as text"
    else:
        train_ex = X.keep_aligned(train_ex, mode, where, ctx.reporter.warn)
        cross, info = _cross(ctx, mode, t_tok, s_tok, t_rows, student.config.vocab_size, train_ex)
        details["cross_tokenizer"] = info
    job = DistillJob(student, teacher, train_ex, eval_ex[: cfg.eval_examples], pad_id(s_tok),
                     student.config.vocab_size, cfg, ctx.work_dir or ctx.out_dir.parent / f".{ctx.out_dir.name}-work",
                     ctx.recipe.seed, reporter=ctx.reporter, cpu=ctx.device.type == "cpu", cross=cross)
    result = train(job)
    if cross is not None:
        details["cross_tokenizer"].update(cross.summary())
    return _finish(ctx, job, s_tok, result, details)


def _cross(ctx, mode: str, t_tok, s_tok, t_rows: int, s_rows: int, train_ex) -> tuple[CrossTokenizer, dict]:
    cross = cross_tokenizer(mode, t_tok, s_tok, t_rows, s_rows)
    shared = 0 if cross.shared is None else int(cross.shared.teacher.numel())
    if mode == "align" and not shared:
        ctx.reporter.warn("distill: the two vocabularies share no token string; align compares with ULD only")
    summary = X.alignment_summary(train_ex)
    ctx.reporter.info(f"distill: {mode} across tokenizers: {summary['aligned_fraction']:.1%} of answer positions "
                      f"aligned, {summary['one_to_one_fraction']:.1%} one-to-one, {shared:,} shared tokens")
    return cross, {"mode": mode, "shared_tokens": shared, **summary}


def cross_tokenizer(mode: str, t_tok, s_tok, t_rows: int, s_rows: int) -> CrossTokenizer:
    """What ``DistillJob.cross`` needs for ``mode`` between these two tokenizers (lm_head rows given)."""
    pairs = X.shared_vocab_pairs(t_tok, s_tok) if mode == "align" else []
    shared = SharedVocab.build(pairs, t_rows, s_rows) if pairs else None
    return CrossTokenizer(mode, pad_id(t_tok), t_rows, shared)
