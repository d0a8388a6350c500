"""Tiny random decoder models of every architecture the prune stage supports, built in memory."""

from __future__ import annotations

import os

import torch

from slmkit.data import Example

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
# families whose surgery differs from Llama's somewhere (fused projections, norms, multipliers)
MORE_ARCHS = ("phi3", "stablelm", "granite", "olmo2", "gemma")
VOCAB = 256


def tiny_config(arch: str, **overrides):
    from transformers import AutoConfig

    kw = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 16,
        "max_position_embeddings": 256,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if arch == "gemma3_text":
        # mixed sliding/full layers, so depth surgery has to keep per-layer attention types aligned
        kw["layer_types"] = ["sliding_attention", "full_attention"] * 2
        kw["sliding_window"] = 8
    if arch == "gemma2":
        kw["sliding_window"] = 8
    kw.update(_family_overrides(arch))
    kw.update(overrides)
    return AutoConfig.for_model(arch, **kw)


def _family_overrides(arch: str) -> dict:
    if arch == "stablelm":
        # head_dim is hidden / heads in StableLM; per-head q/k LayerNorms and qkv biases on
        return {"head_dim": None, "qk_layernorm": True, "use_qkv_bias": True, "partial_rotary_factor": 0.5}
    if arch == "granite":  # Granite 3's multipliers, so a surgery that dropped them would show
        return {"embedding_multiplier": 12.0, "residual_multiplier": 0.22, "attention_multiplier": 0.0625,
                "logits_scaling": 8.0}
    if arch == "phi3":
        return {"sliding_window": None, "original_max_position_embeddings": 256}
    return {}


def tiny_model(arch: str = "llama", seed: int = 0, **overrides):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    # random init leaves norms at 1 and tiny weights; scale up so layers differ measurably
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model.eval()


def random_examples(n: int, seed: int = 0, min_len: int = 6, max_len: int = 24) -> list[Example]:
    """Token sequences of varied length, so padding and masks are exercised."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        out.append(Example(input_ids=ids, loss_mask=[0] + [1] * (length - 1)))
    return out


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits
