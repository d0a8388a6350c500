"""llama.cpp through its Python bindings (``llama_cpp``): the runtime GGUF files are written for."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from slmkit.runtimes.base import BatchDoesNotFit, Variant
from slmkit.runtimes.files import check_gguf_file

INSTALL_HINT = "llama-cpp-python is not installed (pip install 'slmkit[llamacpp]')"


def default_threads(threads: int | None) -> int:
    """The physical cores, as onnxruntime uses: llama-cpp-python's own default is half the logical
    cores, one thread on a 2-core machine, which would halve its speed beside the other runtimes."""
    if threads:
        return threads
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppLM:
    """Quality through llama.cpp; one sequence at a time, as its API allows."""

    backend = "llama_cpp"
    hf_dir = None

    def __init__(self, gguf_file: Path, n_ctx: int = 2048, threads: int | None = None):
        from llama_cpp import Llama

        check_gguf_file(gguf_file)
        n = default_threads(threads)
        self.llm = Llama(model_path=str(gguf_file), n_ctx=n_ctx, logits_all=True, n_threads=n, n_threads_batch=n,
                         verbose=False)
        self.eos = {int(self.llm.token_eos())}

    def logits(self, seqs: list[list[int]]):
        import numpy as np
        import torch

        out = []
        for s in seqs:
            self.llm.reset()
            self.llm.eval(s)
            out.append(torch.from_numpy(np.array(self.llm.scores[: len(s)], dtype=np.float32)))
        return out

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        out = []
        for p in prompts:
            self.llm.reset()
            ids = []
            for t in self.llm.generate(p, top_k=1, temp=0.0, reset=True):
                ids.append(int(t))
                if t in self.eos or len(ids) >= max_new_tokens:
                    break
            out.append(ids)
        return out


def load_lm(variant: Variant, device: str = "cpu", threads: int | None = None, n_ctx: int = 2048) -> LlamaCppLM:
    return LlamaCppLM(variant.path, n_ctx=n_ctx, threads=threads)


class LlamaCppSession:
    """Its Python API holds one sequence per context, so batch 1 only.

    Without ``logits_all`` (a server computes next-token logits only) llama-cpp-python leaves
    ``.scores`` unfilled, so the last position's logits are read from the context itself.
    """

    dims = None
    serves_concurrently = False

    def __init__(self, variant: Variant, n_ctx: int, threads: int | None):
        from llama_cpp import Llama

        n = default_threads(threads)
        self.llm = Llama(model_path=str(variant.path), n_ctx=n_ctx, n_threads=n, n_threads_batch=n, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def sync(self) -> None:
        pass

    def _next(self) -> int:
        import numpy as np

        return int(np.argmax(np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))))

    def start(self, batch) -> Any:
        if len(batch) != 1:
            raise BatchDoesNotFit("llama-cpp-python's API runs one sequence per context (batch 1 only)")
        self.llm.reset()
        self.llm.eval(list(map(int, batch[0])))
        return [self._next()]

    def step(self, state) -> None:
        self.llm.eval([state[0]])
        state[0] = self._next()


def card_notes(gguf_rel: str) -> str:
    return (
        "### Run the GGUF file with llama.cpp\n\n"
        "```bash\n"
        f"llama-cli -m {gguf_rel} -cnv -p \"You are a helpful assistant.\" -n 128\n"
        f"llama-server -m {gguf_rel} --port 8080   # OpenAI-compatible HTTP API\n"
        "```\n\n"
        "or from Python (`pip install llama-cpp-python`):\n\n"
        "```python\n"
        "from llama_cpp import Llama\n"
        f"llm = Llama(model_path=\"{gguf_rel}\", n_ctx=2048)\n"
        "print(llm.create_chat_completion(messages=[{\"role\": \"user\", \"content\": \"Hello!\"}], max_tokens=64))\n"
        "```"
    )
