"""PyTorch + transformers: the reference numerics every other runtime is compared with.

Quality runs in fp32 (``TorchLM``); speed sessions run fp32 or bf16 (bf16 matmuls use AMX on CPUs
that have it) with a KV cache and next-token logits only, as a server would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmkit.errors import InputError
from slmkit.runtimes.base import Variant, eos_ids, trim_at_eos


def resolve_device(name: str = "auto"):
    """``auto`` -> CUDA when present, else CPU; asking for CUDA on a machine without one is an error."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda was requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_hf(path: Path, dtype: str = "float32", device: str = "cpu", gguf_file: str | None = None):
    """An HF checkpoint (or a GGUF file through transformers' loader) in eval mode, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path, **kwargs)


class TorchLM:
    """Quality through PyTorch: batched, right-padded scoring and left-padded greedy generation."""

    def __init__(self, model, tokenizer, hf_dir: Path | None = None, backend: str = "torch_fp32"):
        self.model, self.tokenizer, self.hf_dir, self.backend = model, tokenizer, hf_dir, backend
        gen = getattr(model, "generation_config", None)
        self.eos = eos_ids(getattr(gen, "eos_token_id", None)) | eos_ids(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad = int(pad if pad is not None else 0)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def logits(self, seqs: list[list[int]]):
        import torch

        from slmkit.data import Example, collate

        batch = collate([Example(input_ids=s, loss_mask=[0] * len(s)) for s in seqs], self.pad)
        with torch.inference_mode():
            out = self.model(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            )
        return [out.logits[i, : len(s)].float().cpu() for i, s in enumerate(seqs)]

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        import torch
        from transformers import GenerationConfig

        from slmkit.data import Example, collate_prompts

        batch = collate_prompts([Example(input_ids=p, loss_mask=[], prompt_ids=p) for p in prompts], self.pad)
        gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=self.pad,
                               eos_token_id=sorted(self.eos) or None)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
                generation_config=gen,
            )
        width = batch["input_ids"].shape[1]
        return [trim_at_eos(row[width:].tolist(), self.eos) for row in out]


def load_lm(variant: Variant, device: str = "cpu", threads: int | None = None) -> TorchLM:
    """An HF checkpoint in fp32: the reference numerics."""
    model, tok = load_hf(variant.path, "float32", device)
    return TorchLM(model, tok, hf_dir=variant.path)


def greedy_reference(model_dir: Path, prompts: list[str], new_tokens: int):
    """Greedy continuations of ``prompts`` by an HF model and its fp32 logits on them, one at a time.

    A plain loop over full forwards (no generation config, no KV cache): the reference the
    exports are verified against.
    """
    import torch

    model, tokenizer = load_hf(Path(model_dir), "float32", "cpu")
    sequences, logits = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            for _ in range(new_tokens):
                nxt = model(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            sequences.append(ids[0].tolist())
            logits.append(model(ids).logits[0].float().numpy())
    return sequences, logits


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


class TorchSession:
    """PyTorch with a KV cache, fp32 or bf16 weights."""

    def __init__(self, variant: Variant, dtype: str, device: str):
        import torch

        self.torch, self.device = torch, device
        self.model, _ = load_hf(variant.path, dtype, device)
        c = text_config(self.model.config)
        heads = c.num_attention_heads
        self.dims = {
            "layers": c.num_hidden_layers, "heads": heads,
            "kv_heads": getattr(c, "num_key_value_heads", heads) or heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads, "hidden": c.hidden_size,
            "intermediate": getattr(c, "intermediate_size", 4 * c.hidden_size), "vocab": c.vocab_size,
            "dtype_bytes": 2 if dtype == "bfloat16" else 4,
        }

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def start(self, batch) -> Any:
        ids = self.torch.as_tensor(batch, dtype=self.torch.long, device=self.device)
        with self.torch.inference_mode():
            # logits_to_keep=1: a server computes next-token logits only, not [B, T, V]
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        self.sync()
        return [out.cache, nxt]

    def step(self, state) -> None:
        with self.torch.inference_mode():
            out = self.model(input_ids=state[1], cache=state[0], use_cache=True)
            state[0], state[1] = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        self.sync()


def card_notes(hf_rel: str) -> str:
    return (
        "### Load the HF directory with transformers (or serve it with vLLM)\n\n"
        "```python\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained(\"{hf_rel}\")\n"
        f"tokenizer = AutoTokenizer.from_pretrained(\"{hf_rel}\")\n"
        "```\n\n"
        f"```bash\nvllm serve {hf_rel}\n```"
    )
