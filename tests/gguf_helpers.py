"""SentencePiece-style tokenizers and tiny Gemma / Phi-3 / Llama 2 models for the GGUF tests.

The tokenizers are trained here, offline, on slmkit's shipped prompts with the `tokenizers`
package: a BPE with byte fallback (the 256 ``<0xNN>`` pieces in the vocabulary), the form
transformers saves Llama 2 / Mistral v0.1 / Phi-3 (a space before the first word) and Gemma
(none) tokenizers in. When `sentencepiece` is installed, ``save_sentencepiece_model`` trains a
real ``tokenizer.model`` too.

The models follow export_helpers: tied, peaked embeddings so top-1 checks measure the export.
Gemma 2 / 3 use head_dim 256 and query_pre_attn_scalar 256 (as released Gemmas do), because
transformers' GGUF loader assumes that scalar; Gemma 2 keeps its default soft-capping (50 / 30),
which that loader also assumes.
"""

from __future__ import annotations

import json
from pathlib import Path

SPACE = "\u2581"
_STYLES = {  # style -> special tokens (ids 0..), whether a space goes before the first word
    "llama": (["<unk>", "<s>", "</s>"], True),
    "gemma": (["<pad>", "<eos>", "<bos>", "<unk>"], False),
}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus(limit: int = 400) -> list[str]:
    """User and assistant turns of the shipped prompts (the first ``limit`` rows)."""
    path = Path(__file__).resolve().parents[1] / "slmkit" / "data_files" / "prompts.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:limit]]
    return [m["content"] for row in rows for m in row["messages"]]


def save_spm_tokenizer(out: Path, style: str = "llama", vocab_size: int = 640) -> Path:
    """Train a byte-fallback BPE on the prompts and save it as transformers saves SentencePiece ones."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials, prefix = _STYLES[style]
    trained = Tokenizer(models.BPE())
    # train on words marked the SentencePiece way, so no piece spans a space (split_by_whitespace)
    trained.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first" if prefix else "never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials, show_progress=False)
    trained.train_from_iterator(corpus(), trainer)
    tok = Tokenizer(_with_byte_pieces(trained, specials))
    steps = [normalizers.Prepend(SPACE)] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    decode = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence([*decode, decoders.Strip(" ", 1, 0)] if prefix else decode)
    names = dict(zip(("unk_token", "bos_token", "eos_token"), specials)) if style == "llama" else {
        "pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    fast.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>"]})
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    _add_bos_by_default(out)
    return out


def _with_byte_pieces(trained, specials: list[str]):
    """The trained BPE with <0x00>..<0xFF> right after the specials, as SentencePiece numbers them."""
    from tokenizers import models

    data = json.loads(trained.to_str())["model"]
    learned = sorted((i, t) for t, i in data["vocab"].items() if t not in specials)
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)] + [t for _, t in learned]
    vocab = {t: i for i, t in enumerate(pieces)}
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in data["merges"]]
    return models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)


def _add_bos_by_default(out: Path) -> None:
    # SentencePiece models start every sequence with BOS; the post-processor does it in tokenizers
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    bos = json.loads((out / "tokenizer_config.json").read_text())["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(str(out / "tokenizer.json"))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["add_bos_token"], cfg["add_eos_token"] = True, False
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def save_sentencepiece_model(out: Path, vocab_size: int = 640) -> Path:
    """A real SentencePiece tokenizer.model (BPE, byte fallback), trained with `sentencepiece`."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=model, model_type="bpe",
                                   vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0,
                                   minloglevel=2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    return out


def tiny_config(arch: str, tokenizer_dir: Path):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = {
        "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "tie_word_embeddings": True, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id,
    }
    extra = {
        "gemma": {"head_dim": 32},
        "gemma2": {"head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 8},
        "gemma3_text": {"head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 8, "num_hidden_layers": 6},
        "phi3": {"tie_word_embeddings": False, "original_max_position_embeddings": 256},
        "llama": {},
    }[arch]
    return AutoConfig.for_model(arch, **{**common, **extra})


def save_tiny_model(out: Path, tokenizer_dir: Path, arch: str, seed: int = 0) -> Path:
    """A tiny causal LM of ``arch`` saved with slmkit's saver and the tokenizer of ``tokenizer_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmkit.models import save_model

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer_dir)).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.05)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # Gemma's zero-centred norms: make the +1 offset matter
                p.uniform_(-0.3, 0.3) if arch.startswith("gemma") else p.uniform_(0.7, 1.3)
        if not model.config.tie_word_embeddings:
            model.lm_head.weight.copy_(model.get_input_embeddings().weight)
    save_model(model, tok, out)
    return out
