"""SentencePiece vocabularies (Llama 2, Mistral v0.1, Gemma, Phi-3) as GGUF's ``llama`` tokenizer.

llama.cpp's SentencePiece tokenizer needs, per id, the piece, a score (the bigram whose merged
piece scores highest is merged first) and a token type (normal, unknown, control, user-defined,
unused, byte). llama.cpp's converter (``_create_vocab_sentencepiece``) reads them from
``tokenizer.model`` with the ``sentencepiece`` package; so does slmkit when both are there.
Otherwise they come from ``tokenizer.json``, the form transformers saves: a Unigram model carries
its scores, and a byte-fallback BPE (how transformers converts SentencePiece BPE) gives each merged
piece the negated rank of its merge, which orders merges exactly as SentencePiece's scores do.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from slmkit.errors import InputError

_BYTE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_SPACE = "\u2581"  # SentencePiece's visible space


@dataclass
class SpmVocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]  # gguf.TokenType values
    add_space_prefix: bool = True  # SentencePiece's add_dummy_prefix: " " before the first word
    source: str = "tokenizer.json"
    notes: list[str] = field(default_factory=list)


def is_sentencepiece(model_dir: Path) -> bool:
    """True when the tokenizer is SentencePiece-style (Unigram, or BPE with byte fallback)."""
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        model = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {})
        return model.get("type") == "Unigram" or (model.get("type") == "BPE" and bool(model.get("byte_fallback")))
    return (model_dir / "tokenizer.model").is_file()


def spm_vocab(model_dir: Path, vocab_size: int, arch: str) -> SpmVocab:
    """Pieces, scores and types for ids 0..vocab_size-1, as llama.cpp's converter writes them."""
    tokenizer_json = model_dir / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text(encoding="utf-8")) if tokenizer_json.is_file() else None
    if (model_dir / "tokenizer.model").is_file() and importlib.util.find_spec("sentencepiece") is not None:
        vocab = _from_sentencepiece(model_dir / "tokenizer.model", vocab_size)
    elif data is not None:
        vocab = _from_tokenizer_json(data, vocab_size)
    else:
        raise InputError(
            f"{model_dir}: tokenizer.model needs the `sentencepiece` package (pip install sentencepiece), "
            "and there is no tokenizer.json to read the vocabulary from instead"
        )
    _apply_added_tokens(vocab, _added_tokens(model_dir, data), vocab_size)
    # Gemma never prepends a space (llama.cpp's Gemma converters write add_space_prefix = false)
    vocab.add_space_prefix = not arch.startswith("gemma") and (data is None or _prepends_space(data))
    return vocab


def _from_sentencepiece(path: Path, vocab_size: int) -> SpmVocab:
    from gguf import TokenType
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(path))
    vocab = _empty(vocab_size, "tokenizer.model")
    for i in range(min(sp.vocab_size(), vocab_size)):
        kind = TokenType.NORMAL
        if sp.IsUnknown(i):
            kind = TokenType.UNKNOWN
        elif sp.IsControl(i):
            kind = TokenType.CONTROL
        elif sp.IsUnused(i):
            kind = TokenType.UNUSED
        elif sp.IsByte(i):
            kind = TokenType.BYTE
        vocab.tokens[i], vocab.scores[i], vocab.types[i] = sp.IdToPiece(i), sp.GetScore(i), kind
    return vocab


def _from_tokenizer_json(data: dict, vocab_size: int) -> SpmVocab:
    from gguf import TokenType

    model = data["model"]
    vocab = _empty(vocab_size, "tokenizer.json")
    if model["type"] == "Unigram":
        pieces = {piece: (i, score) for i, (piece, score) in enumerate(model["vocab"])}
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else None
    else:
        ranks = _merge_ranks(model.get("merges", []))
        pieces = {piece: (i, -float(ranks[piece]) if piece in ranks else 0.0) for piece, i in model["vocab"].items()}
        unk = model.get("unk_token")
    for piece, (i, score) in pieces.items():
        if i >= vocab_size:
            vocab.notes.append(f"piece {piece!r} (id {i}) is past vocab_size {vocab_size} and was left out")
            continue
        kind = TokenType.BYTE if _BYTE.match(piece) else TokenType.UNKNOWN if piece == unk else TokenType.NORMAL
        vocab.tokens[i], vocab.scores[i], vocab.types[i] = piece, score, kind
    return vocab


def _merge_ranks(merges: list) -> dict[str, int]:
    """Merged piece -> rank of the first merge that makes it (merges are "a b" or ["a", "b"])."""
    ranks: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        ranks.setdefault(left + right, rank)
    return ranks


def _empty(vocab_size: int, source: str) -> SpmVocab:
    from gguf import TokenType

    # ids the tokenizer never produces (a padded embedding) are UNUSED, as the converter writes them
    return SpmVocab([f"[PAD{i}]" for i in range(vocab_size)], [-10000.0] * vocab_size,
                    [TokenType.UNUSED] * vocab_size, source=source)


def _added_tokens(model_dir: Path, data: dict | None) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) from tokenizer.json, added_tokens.json and tokenizer_config.json."""
    out = {t["id"]: (t["content"], bool(t.get("special"))) for t in (data or {}).get("added_tokens", [])}
    added_json = model_dir / "added_tokens.json"
    if added_json.is_file():
        for content, i in json.loads(added_json.read_text(encoding="utf-8")).items():
            out.setdefault(int(i), (content, False))
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        for i, t in decoder.items():
            out[int(i)] = (t["content"], bool(t.get("special")))
    return out


def _apply_added_tokens(vocab: SpmVocab, added: dict[int, tuple[str, bool]], vocab_size: int) -> None:
    """Added tokens are matched whole by llama.cpp: special ones as CONTROL, others USER_DEFINED."""
    from gguf import TokenType

    for i, (content, special) in sorted(added.items()):
        if i >= vocab_size:
            vocab.notes.append(f"added token {content!r} (id {i}) is past vocab_size {vocab_size} and was left out")
            continue
        special = special or _looks_special(content)
        # user-defined pieces are matched against raw text, where a space is " ", not the visible space
        vocab.tokens[i] = content if special else content.replace(_SPACE, " ")
        vocab.types[i] = TokenType.CONTROL if special else TokenType.USER_DEFINED
        vocab.scores[i] = -1000.0


def _looks_special(content: str) -> bool:
    # the converter's does_token_look_special: <|...|>, <s>-style markers written as added tokens
    return (content.startswith("<|") and content.endswith("|>")) or content in ("<s>", "</s>", "<pad>", "<bos>",
                                                                                 "<eos>", "<mask>")


def _prepends_space(data: dict) -> bool:
    """Whether the tokenizer puts a space before the first word (Llama 2 and Phi-3 do, Gemma does not)."""
    steps = _steps(data.get("normalizer")) + _steps(data.get("pre_tokenizer"))
    for step in steps:
        if step.get("type") == "Prepend" and step.get("prepend") == _SPACE:
            return True
        if step.get("type") == "Metaspace":
            return step.get("prepend_scheme", "always" if step.get("add_prefix_space", True) else "never") != "never"
    return False


def _steps(node: dict | None) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [s for child in node.get("normalizers") or node.get("pretokenizers") or [] for s in _steps(child)]
    return [node]
