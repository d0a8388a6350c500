"""One adapter per runtime: find a model's formats, load it, score and generate, time requests.

Each backend gives two things: an ``LM`` for quality (teacher-forced logits and greedy answers,
see ``quality.py``) and a speed session with ``start(batch) -> state`` (prefill plus the first
token: time to first token) and ``step(state)`` (one more token for every row), which the
timing harness in ``speed.py`` drives. Libraries are imported inside the functions that need
them, so a missing optional runtime costs one skipped row, not an import error.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

# format -> backends that can run it (issue 6: "each on every backend that can run it")
FORMAT_BACKENDS = {
    "hf": ("torch_fp32", "torch_bf16", "vllm"),
    "onnx": ("onnxruntime_genai",),
    "gguf": ("llama_cpp",),
}
QUALITY_BACKEND = {"hf": "torch_fp32", "onnx": "onnxruntime_genai", "gguf": "llama_cpp"}


class BatchDoesNotFit(Exception):
    """A batch size this machine cannot hold: the row is skipped with this message."""


@dataclass(frozen=True)
class Variant:
    """One loadable form of a model artifact: an HF directory, an ONNX GenAI directory or a GGUF file."""

    model_id: str  # "teacher" or the artifact id "<stage>/v<N>"
    format: str  # hf | onnx | gguf
    path: Path  # directory (hf, onnx) or file (gguf)


def find_variants(model_id: str, root: Path) -> list[Variant]:
    """Every model format found in an artifact: at its root or one folder down (export writes hf/, onnx/)."""
    root = Path(root)
    found: list[Variant] = []
    dirs = [root] + sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for d in dirs:
        if (d / "config.json").is_file() and (any(d.glob("*.safetensors")) or any(d.glob("*.bin"))):
            found.append(Variant(model_id, "hf", d))
        if (d / "genai_config.json").is_file():
            found.append(Variant(model_id, "onnx", d))
        found += [Variant(model_id, "gguf", f) for f in sorted(d.glob("*.gguf"))]
    if root.is_file() and root.suffix == ".gguf":
        found.append(Variant(model_id, "gguf", root))
    return found


def unavailable_reason(backend: str, device: str) -> str | None:
    """Why a backend cannot run on this machine, or None when it can."""
    if backend == "onnxruntime_genai" and importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed"
    if backend == "llama_cpp" and importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'slmkit[llamacpp]')"
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            return "vLLM is not installed (pip install 'slmkit[gpu]')"
        if device != "cuda":
            return "vLLM needs a CUDA GPU and none is in use"
    return None


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_hf(path: Path, dtype: str = "float32", device: str = "cpu"):
    """An HF checkpoint in eval mode, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _trim_at_eos(ids: list[int], eos: set[int]) -> list[int]:
    """Keep tokens up to and including the first end-of-sequence: it is part of the answer."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


def _eos_ids(value) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, (list, tuple)) else {int(value)}


class TorchLM:
    """Quality through PyTorch: batched, right-padded scoring and left-padded greedy generation."""

    def __init__(self, model, tokenizer, hf_dir: Path | None = None, backend: str = "torch_fp32"):
        self.model, self.tokenizer, self.hf_dir, self.backend = model, tokenizer, hf_dir, backend
        gen = getattr(model, "generation_config", None)
        self.eos = _eos_ids(getattr(gen, "eos_token_id", None)) | _eos_ids(tokenizer.eos_token_id)
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
        gen = GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad,
            eos_token_id=sorted(self.eos) or None,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
                generation_config=gen,
            )
        width = batch["input_ids"].shape[1]
        return [_trim_at_eos(row[width:].tolist(), self.eos) for row in out]


class OgLM:
    """Quality through onnxruntime-genai: the whole sequence appended once gives logits at every position."""

    backend = "onnxruntime_genai"
    hf_dir = None

    def __init__(self, onnx_dir: Path):
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(str(onnx_dir))
        cfg = json.loads((Path(onnx_dir) / "genai_config.json").read_text())["model"]
        self.eos = _eos_ids(cfg.get("eos_token_id"))

    def _generator(self, max_length: int, batch_size: int = 1, min_length: int = 0):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(
            max_length=max_length, min_length=min_length, batch_size=batch_size, do_sample=False
        )
        return self.og.Generator(self.model, params)

    def logits(self, seqs: list[list[int]]):
        import numpy as np
        import torch

        out = []
        for s in seqs:
            g = self._generator(len(s) + 1)
            g.append_tokens(np.asarray([s], dtype=np.int32))
            out.append(torch.from_numpy(np.array(g.get_output("logits"))[0]).float())
        return out

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        import numpy as np

        out = []
        for p in prompts:
            g = self._generator(len(p) + max_new_tokens)
            g.append_tokens(np.asarray([p], dtype=np.int32))
            while not g.is_done():
                g.generate_next_token()
            out.append(_trim_at_eos([int(t) for t in g.get_sequence(0)[len(p) :]], self.eos))
        return out


class LlamaCppLM:
    """Quality through llama-cpp-python (GGUF); one sequence at a time, as its API allows."""

    backend = "llama_cpp"
    hf_dir = None

    def __init__(self, gguf_file: Path, n_ctx: int = 2048, threads: int | None = None):
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(gguf_file), n_ctx=n_ctx, logits_all=True, n_threads=threads, verbose=False
        )
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


def load_lm(variant: Variant, device: str = "cpu", threads: int | None = None):
    """The quality handle for a variant (PyTorch fp32 for HF checkpoints: the reference numerics)."""
    if variant.format == "hf":
        model, tok = load_hf(variant.path, "float32", device)
        return TorchLM(model, tok, hf_dir=variant.path)
    if variant.format == "onnx":
        return OgLM(variant.path)
    return LlamaCppLM(variant.path, threads=threads)
