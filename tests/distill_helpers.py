"""Tiny random teachers/students and synthetic examples for the distill tests."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from slmkit.data import Example
from slmkit.distill.config import DistillConfig
from slmkit.distill.trainer import DistillJob

VOCAB = 96


def tiny_llama(layers=2, hidden=32, vocab=VOCAB, seed=0, tie=True):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def examples(n=12, seed=0, vocab=VOCAB, min_len=6, max_len=14):
    """Chat-like examples: a prompt (not counted) followed by a response (counted)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        p = int(torch.randint(2, length - 2, (1,), generator=g))
        ids = torch.randint(3, vocab, (length,), generator=g).tolist()
        out.append(Example(ids, [0] * p + [1] * (length - p), prompt_ids=ids[:p], source=f"synthetic:{i}"))
    return out


def job(tmp_path, teacher_layers=3, student_layers=2, **cfg):
    base = dict(max_steps=4, batch_size=2, precision="fp32", eval_every=2, checkpoint_every=2)
    base.update(cfg)
    return DistillJob(
        student=tiny_llama(student_layers, seed=1), teacher=tiny_llama(teacher_layers, seed=2),
        train=examples(12), eval=examples(4, seed=9), pad_id=0, vocab=VOCAB,
        cfg=DistillConfig(**base), work_dir=tmp_path / "work", seed=0,
    )
