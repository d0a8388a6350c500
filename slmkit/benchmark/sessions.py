"""Speed sessions, one per backend: ``start(batch)`` runs the prefill and picks the first token,
``step(state)`` decodes one more token for every row. Greedy, and end-of-sequence never stops a
timed request, so every backend generates exactly the same number of tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmkit.benchmark.backends import BatchDoesNotFit, Variant, load_hf


class TorchSession:
    """PyTorch with a KV cache, fp32 or bf16 weights (bf16 matmuls use AMX on CPUs that have it)."""

    def __init__(self, variant: Variant, dtype: str, device: str):
        import torch

        self.torch, self.device = torch, device
        self.model, _ = load_hf(variant.path, dtype, device)
        c = (
            self.model.config.get_text_config()
            if hasattr(self.model.config, "get_text_config")
            else self.model.config
        )
        heads = c.num_attention_heads
        self.dims = {
            "layers": c.num_hidden_layers,
            "heads": heads,
            "kv_heads": getattr(c, "num_key_value_heads", heads) or heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads,
            "hidden": c.hidden_size,
            "intermediate": getattr(c, "intermediate_size", 4 * c.hidden_size),
            "vocab": c.vocab_size,
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


class OgSession:
    """onnxruntime-genai: one Generator per request; min_length = max_length keeps eos from ending it."""

    def __init__(self, variant: Variant, new_tokens: int):
        import onnxruntime_genai as og

        self.og, self.new_tokens = og, new_tokens
        self.model = og.Model(str(variant.path))
        d = json.loads((Path(variant.path) / "genai_config.json").read_text())["model"]
        dec = d["decoder"]
        self.context_length = int(d.get("context_length", 0)) or None
        self.dims = {
            "layers": dec["num_hidden_layers"],
            "heads": dec["num_attention_heads"],
            "kv_heads": dec.get("num_key_value_heads", dec["num_attention_heads"]),
            "head_dim": dec["head_size"],
            "hidden": dec["hidden_size"],
            "intermediate": 4 * dec["hidden_size"],
            "vocab": d["vocab_size"],
            "dtype_bytes": 4,
        }

    def sync(self) -> None:
        pass

    def start(self, batch) -> Any:
        import numpy as np

        b, t = len(batch), len(batch[0])
        total = t + self.new_tokens
        if self.context_length and total > self.context_length:
            raise BatchDoesNotFit(
                f"prompt + new tokens = {total} exceeds the graph's context_length {self.context_length}"
            )
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=total, min_length=total, batch_size=b, do_sample=False)
        g = self.og.Generator(self.model, params)
        g.append_tokens(np.asarray(batch, dtype=np.int32))
        g.generate_next_token()
        return g

    def step(self, state) -> None:
        state.generate_next_token()


class LlamaCppSession:
    """llama-cpp-python: its Python API holds one sequence per context, so batch 1 only."""

    dims = None

    def __init__(self, variant: Variant, n_ctx: int, threads: int | None):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(variant.path), n_ctx=n_ctx, n_threads=threads, verbose=False)

    def sync(self) -> None:
        pass

    def start(self, batch) -> Any:
        import numpy as np

        if len(batch) != 1:
            raise BatchDoesNotFit("llama-cpp-python's API runs one sequence per context (batch 1 only)")
        self.llm.reset()
        self.llm.eval(list(map(int, batch[0])))
        nxt = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
        return [nxt]

    def step(self, state) -> None:
        import numpy as np

        self.llm.eval([state[0]])
        state[0] = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))


class VllmSession:
    """vLLM on a GPU: whole requests; TTFT is a 1-token request, decode the rest of a full one."""

    dims = None
    whole_requests = True

    def __init__(self, variant: Variant):
        from vllm import LLM

        self.llm = LLM(model=str(variant.path), dtype="auto", gpu_memory_utilization=0.8)

    def sync(self) -> None:
        pass

    def request(self, batch, new_tokens: int) -> dict:
        import time

        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(map(int, r))) for r in batch]
        t0 = time.perf_counter()
        self.llm.generate(
            prompts, SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True), use_tqdm=False
        )
        t1 = time.perf_counter()
        self.llm.generate(
            prompts, SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True), use_tqdm=False
        )
        t2 = time.perf_counter()
        # decode is the full request minus a prefill; the two requests share no cache between them
        return {"ttft_s": t1 - t0, "total_s": t2 - t1, "decode_s": max(t2 - t1 - (t1 - t0), 1e-9)}


def open_session(
    variant: Variant, backend: str, new_tokens: int, n_ctx: int, device: str, threads: int | None
):
    """Load a variant on a backend (load time is measured around this call)."""
    if backend == "torch_fp32":
        return TorchSession(variant, "float32", device)
    if backend == "torch_bf16":
        return TorchSession(variant, "bfloat16", device)
    if backend == "onnxruntime_genai":
        return OgSession(variant, new_tokens)
    if backend == "llama_cpp":
        return LlamaCppSession(variant, n_ctx, threads)
    if backend == "vllm":
        return VllmSession(variant)
    raise ValueError(f"unknown backend {backend!r}")
