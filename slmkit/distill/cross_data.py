"""Training rows tokenized by two tokenizers from the same text, with their aligned positions.

Each row is rendered with the teacher's chat template and with the student's, and tokenized by
each model's own tokenizer. The answer (each assistant turn's content, or a completion) must
appear verbatim in both renderings: that text is the coordinate system the two token streams
are aligned in (``slmkit.distill.alignment``). The student's loss mask is the one
``slmkit.data`` gives its own rendering, so both sides mark the same answer span.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from slmkit.data import Example, _assistant_spans, _field, render_chat
from slmkit.distill.alignment import Anchor, Pair, align, common_span, end_marker_spans, shared_tokens
from slmkit.errors import InputError


@dataclass
class PairedExample(Example):
    """A student example plus the teacher's tokens of the same text and the aligned positions."""

    teacher_ids: list[int] = field(default_factory=list)
    teacher_prompt_ids: list[int] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)


# --- vocabularies ----------------------------------------------------------------------------


def token_scheme(tokenizer) -> str:
    """How a fast tokenizer writes its pieces: byte_level, sentencepiece, wordpiece or plain."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, parts = spec.get("model", {}).get("type"), json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    if model == "WordPiece":
        return "wordpiece"
    if '"ByteLevel"' in parts:
        return "byte_level"
    if model == "Unigram" or '"Metaspace"' in parts or "\u2581" in parts:
        return "sentencepiece"
    return "plain"


def shared_vocab_pairs(teacher_tok, student_tok) -> list[tuple[int, int]]:
    """(teacher id, student id) of the strings both vocabularies hold (markers normalised)."""
    return shared_tokens(teacher_tok.get_vocab(), token_scheme(teacher_tok), student_tok.get_vocab(),
                         token_scheme(student_tok), teacher_special=set(teacher_tok.all_special_tokens),
                         student_special=set(student_tok.all_special_tokens))


# --- one rendering ---------------------------------------------------------------------------


@dataclass
class Tokens:
    """One tokenizer's view of a row: ids, loss mask, prompt ids and each token's common span."""

    ids: list[int]
    mask: list[int]
    prompt_ids: list[int]
    spans: list[tuple[int, int] | None]


def _answers(messages: list[dict]) -> list[str]:
    return [str(m["content"]) for m in messages if m["role"] == "assistant"]


def answer_bases(answers: list[str]) -> list[int]:
    """Common coordinate of each answer's first character: answers in order, one end slot after each."""
    bases, at = [], 0
    for text in answers:
        bases.append(at)
        at += len(text) + 1
    return bases


def chat_tokens(tok, messages: list[dict], limit: int, who: str, where: str) -> Tokens:
    """Render ``messages`` with ``tok``'s chat template and tokenize; the answers are the anchors."""
    try:
        text, spans = _assistant_spans(tok, messages)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt_text = render_chat(tok, messages[:last], generation_prompt=True)
    except InputError as e:
        raise InputError(f"{where}: the {who}'s chat template: {e}") from None
    except Exception as e:  # jinja's TemplateError: e.g. a template that refuses a system turn
        raise InputError(f"{where}: the {who}'s chat template cannot render this conversation "
                         f"({e.__class__.__name__}: {e})") from None
    answers = _answers(messages)
    anchors, markers = [], []
    for (a, b), content, base in zip(spans, answers, answer_bases(answers), strict=True):
        at = text.find(content, a)
        if at < 0 or at + len(content) > b:
            raise InputError(f"{where}: the {who}'s chat template does not render an assistant turn verbatim, "
                             "so the two tokenizations cannot be aligned on the answer text")
        anchors.append(Anchor(at, at + len(content), base))
        if at + len(content) < b:  # the turn's end tag counts: its first token is the end slot
            markers.append((at + len(content), base + len(content)))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"][:limit]]
    mask = [int(any(a <= s < b for a, b in spans)) for s, _ in offsets]
    common = [common_span(text, o, anchors) for o in offsets]
    for k, span in end_marker_spans(offsets, markers).items():
        common[k] = span if common[k] is None else common[k]
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"][:limit]
    return Tokens(list(enc["input_ids"][:limit]), mask, list(prompt_ids), common)


def completion_tokens(tok, prompt: str, completion: str, limit: int) -> Tokens:
    """Prompt + completion (+ EOS) tokenized apart, as ``slmkit.data`` does; the completion is the anchor."""
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
    anchors = [Anchor(0, len(completion), 0)]
    c_spans = [common_span(completion, tuple(o), anchors) for o in enc["offset_mapping"]]
    c_ids = list(enc["input_ids"])
    if tok.eos_token_id is not None:
        c_ids.append(tok.eos_token_id)
        c_spans.append((len(completion), len(completion) + 1))
    ids, mask = (p_ids + c_ids)[:limit], ([0] * len(p_ids) + [1] * len(c_ids))[:limit]
    return Tokens(ids, mask, p_ids[:limit], ([None] * len(p_ids) + c_spans)[:limit])


# --- rows -> paired examples -----------------------------------------------------------------


def _row_tokens(row: dict, spec, tok, limit: int, who: str, where: str) -> Tokens | None:
    if spec.format == "chat":
        messages = _field(row, spec.messages_field, where)
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            return None  # a prompt-only row has no answer to align (sequence_kd writes one first)
        return chat_tokens(tok, messages, limit, who, where)
    if spec.format == "prompt_completion":
        prompt, completion = str(_field(row, spec.prompt_field, where)), str(_field(row, spec.completion_field, where))
        return completion_tokens(tok, prompt, completion, limit)
    raise InputError(f"{where}: loss.cross_tokenizer aligns answers of chat or prompt_completion data; "
                     f"format {spec.format} (packed text blocks) cannot be aligned across tokenizers")


def paired_example(row: dict, spec, teacher_tok, student_tok, limit: int, where: str) -> PairedExample | None:
    """The row tokenized by both models, or None when it holds no answer."""
    s = _row_tokens(row, spec, student_tok, limit, "student", where)
    if s is None:
        return None
    t = _row_tokens(row, spec, teacher_tok, limit, "teacher", where)
    pairs = align(s.spans, s.mask, t.spans)
    return PairedExample(s.ids, s.mask, s.prompt_ids, where, teacher_ids=t.ids, teacher_prompt_ids=t.prompt_ids,
                         pairs=pairs)


def paired_examples(rows: list[dict], spec, teacher_tok, student_tok, limit: int, where: str) -> list[PairedExample]:
    out = []
    for i, row in enumerate(rows):
        ex = paired_example(row, spec, teacher_tok, student_tok, limit, f"{where}:{i + 1}")
        if ex is not None:
            out.append(ex)
    return out


def alignment_summary(examples: list[PairedExample]) -> dict:
    """Share of the student's counted positions aligned with a teacher position, and one-to-one."""
    counted = sum(sum(e.loss_mask[1:]) for e in examples)
    aligned = sum(len(e.pairs) for e in examples)
    exact = sum(sum(p.exact for p in e.pairs) for e in examples)
    n = max(counted, 1)
    return {"counted_positions": counted, "aligned_positions": aligned, "aligned_fraction": round(aligned / n, 4),
            "one_to_one_fraction": round(exact / n, 4)}


def keep_aligned(examples: list[PairedExample], mode: str, where: str, warn=None) -> list[PairedExample]:
    """Drop examples with no aligned position (a warning); none left is an error."""
    kept = [e for e in examples if sum(e.loss_mask[1:]) > 0 and e.pairs]
    if not kept:
        raise InputError(
            f"distill: loss.cross_tokenizer: {mode} cannot align any position of {where}: no answer token of "
            "the student starts where a teacher token starts (check that both chat templates render the "
            "answers verbatim, and max_length), or use data: sequence_kd without cross_tokenizer")
    if len(kept) < len(examples) and warn is not None:
        warn(f"distill: {len(examples) - len(kept)} of {len(examples)} examples of {where} have no aligned "
             "position (or no answer token left after truncation) and are skipped")
    return kept
