"""Token alignment across two tokenizers: pure functions on strings and character spans.

Cross-tokenizer distillation compares the teacher's and the student's next-token distributions
where both have read the same text. Each token of an answer gets a *common span*: its
characters in a coordinate system both renderings share (the answer's own text, without the
chat template around it), with surrounding whitespace stripped so that a byte-level " hello"
and a WordPiece "hello" cover the same characters. A student position and a teacher position
are *aligned* when the tokens they predict start at the same common character: both models
have read the same answer prefix. They match *one-to-one* when those tokens also end at the
same character: both predict the same string, so their distributions can be compared token
by token over the strings the two vocabularies share.

Nothing here imports torch or a tokenizer library; ``slmkit.distill.cross_data`` feeds it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

Span = tuple[int, int]  # [start, end) in common (answer-text) coordinates

# --- vocabularies --------------------------------------------------------------------------


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character -> byte (the inverse of its bytes_to_unicode)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def normalize_token(piece: str, scheme: str) -> str | None:
    """The text a vocabulary entry stands for, or None when it is not a whole string.

    byte_level (GPT-2 / Llama-3 / Qwen / SmolLM BPE): stand-in characters back to bytes, then
    UTF-8 (a token holding half a character is None). sentencepiece: the word marker is a
    space, ``<0x0A>`` byte pieces are their byte. wordpiece: ``##x`` continues a word (``x``),
    any other piece starts one (`` x``). plain: the piece as it is.
    """
    if scheme == "byte_level":
        dec = _byte_decoder()
        if not all(c in dec for c in piece):
            return None
        try:
            return bytes(dec[c] for c in piece).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if scheme == "sentencepiece":
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            byte = int(piece[3:5], 16)
            return chr(byte) if byte < 128 else None
        return piece.replace("\u2581", " ")
    if scheme == "wordpiece":
        return piece[2:] if piece.startswith("##") else " " + piece
    if scheme == "plain":
        return piece
    raise ValueError(f"unknown tokenizer scheme {scheme!r}")


def _by_string(vocab: dict[str, int], scheme: str, special: set[str]) -> dict[str, int]:
    """Normalised string -> id, keeping only strings exactly one entry stands for."""
    seen: dict[str, int] = {}
    clash: set[str] = set()
    for piece, idx in vocab.items():
        text = piece if piece in special else normalize_token(piece, scheme)
        if not text:
            continue
        if text in seen:
            clash.add(text)
        seen[text] = idx
    return {t: i for t, i in seen.items() if t not in clash}


def shared_tokens(teacher_vocab: dict[str, int], teacher_scheme: str, student_vocab: dict[str, int],
                  student_scheme: str, *, teacher_special: set[str] = frozenset(),
                  student_special: set[str] = frozenset()) -> list[tuple[int, int]]:
    """(teacher id, student id) of every string both vocabularies hold exactly once, sorted by teacher id.

    Special tokens (``<|im_end|>``, ``[SEP]``) match by their literal text.
    """
    t = _by_string(teacher_vocab, teacher_scheme, set(teacher_special))
    s = _by_string(student_vocab, student_scheme, set(student_special))
    return sorted((t[text], s[text]) for text in t.keys() & s.keys())


# --- spans -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A stretch of a rendered text that holds answer text: text[start:end] is common[base:base + end - start]."""

    start: int
    end: int
    base: int


def common_span(text: str, token: Span, anchors: list[Anchor]) -> Span | None:
    """A token's characters in common coordinates, whitespace stripped; None outside every anchor.

    A token of whitespace only keeps its whitespace span (so a newline can still align with a newline).
    """
    s, e = token
    for a in anchors:
        lo, hi = max(s, a.start), min(e, a.end)
        if lo >= hi:
            continue
        raw = (lo, hi)
        while lo < hi and text[lo].isspace():
            lo += 1
        while hi > lo and text[hi - 1].isspace():
            hi -= 1
        lo, hi = (lo, hi) if lo < hi else raw
        return a.base + lo - a.start, a.base + hi - a.start
    return None


def end_marker_spans(offsets: list[Span], markers: list[tuple[int, int]]) -> dict[int, Span]:
    """Token index -> the one-character common span of an end-of-answer slot.

    ``markers``: (character where an answer's text ends in the rendered text, its common
    coordinate). The first token starting at or after that character (the template's end tag,
    or EOS) stands for "the answer ends here" in both renderings.
    """
    out: dict[int, Span] = {}
    for char, coord in markers:
        k = next((k for k, (s, e) in enumerate(offsets) if s >= char and e > s), None)
        if k is not None:
            out[k] = (coord, coord + 1)
    return out


@dataclass(frozen=True)
class Pair:
    """A student position and a teacher position whose next tokens start at the same common character."""

    student: int  # position whose logits predict student token student + 1
    teacher: int
    exact: bool  # the two next tokens also end at the same character (one-to-one)


def align(student: list[Span | None], counted: list[int], teacher: list[Span | None]) -> list[Pair]:
    """Aligned positions of one example.

    ``student[k]`` / ``teacher[k]``: common span of token k (None: template text, prompt, cut).
    ``counted[k]``: the student's loss mask (token k is a target). A student position k - 1 is
    paired with teacher position m - 1 when both next tokens (k, m) start at the same character.
    """
    starts: dict[int, tuple[int, Span]] = {}
    for m, span in enumerate(teacher):
        if m >= 1 and span is not None:
            starts.setdefault(span[0], (m, span))
    pairs = []
    for k, span in enumerate(student):
        if k < 1 or span is None or not counted[k] or span[0] not in starts:
            continue
        m, t_span = starts[span[0]]
        pairs.append(Pair(k - 1, m - 1, t_span[1] == span[1]))
    return pairs
