"""vLLM on a GPU: HF checkpoints, FP8 and W4A16 (compressed-tensors) directories."""

from __future__ import annotations

import importlib.util

from slmkit.runtimes.base import Variant


def unavailable_reason(device: str) -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'slmkit[gpu]')"
    if device != "cuda":
        return "vLLM needs a CUDA GPU and none is in use"
    return None


class VllmSession:
    """Whole requests; TTFT is a 1-token request, decode the rest of a full one."""

    dims = None
    whole_requests = True
    serves_concurrently = False

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
        self.llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True), use_tqdm=False)
        t1 = time.perf_counter()
        self.llm.generate(prompts, SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True),
                          use_tqdm=False)
        t2 = time.perf_counter()
        # decode is the full request minus a prefill; the two requests share no cache between them
        return {"ttft_s": t1 - t0, "total_s": t2 - t1, "decode_s": max(t2 - t1 - (t1 - t0), 1e-9)}
