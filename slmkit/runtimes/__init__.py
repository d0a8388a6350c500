"""The runtimes slmkit's artifacts are served with, one module each, behind one small registry.

``pytorch`` (transformers, fp32 / bf16), ``onnx_genai`` (onnxruntime-genai), ``llama_cpp``
(GGUF in llama.cpp), ``gguf_transformers`` (GGUF through transformers' loader) and ``vllm``
(GPU). Each owns loading, teacher-forced logits, greedy generation and its speed session;
quantize, export (verification) and benchmark reach them only through the functions below.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slmkit.runtimes.base import LM, BatchDoesNotFit, Variant, find_variants

# format -> backends that can run it; the first one gives the format's quality figures
FORMAT_BACKENDS = {
    "hf": ("torch_fp32", "torch_bf16", "vllm"),
    "onnx": ("onnxruntime_genai",),
    "gguf": ("llama_cpp",),
}
QUALITY_BACKEND = {fmt: backends[0] for fmt, backends in FORMAT_BACKENDS.items()}

__all__ = ["FORMAT_BACKENDS", "LM", "QUALITY_BACKEND", "BatchDoesNotFit", "Variant", "find_variants",
           "load_lm", "open_session", "unavailable_reason", "verification_lm"]


def unavailable_reason(backend: str, device: str) -> str | None:
    """Why a backend cannot run on this machine (``device``: cpu | cuda), or None when it can."""
    from slmkit.runtimes import llama_cpp, vllm

    if backend == "onnxruntime_genai" and importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed"
    if backend == "llama_cpp" and not llama_cpp.available():
        return llama_cpp.INSTALL_HINT
    if backend == "vllm":
        return vllm.unavailable_reason(device)
    return None


def load_lm(variant: Variant, device: str = "cpu", threads: int | None = None) -> LM:
    """The quality handle of a variant on its format's reference runtime (PyTorch fp32 for HF)."""
    from slmkit.runtimes import llama_cpp, onnx_genai, pytorch

    module = {"hf": pytorch, "onnx": onnx_genai, "gguf": llama_cpp}[variant.format]
    return module.load_lm(variant, device=device if variant.format == "hf" else "cpu", threads=threads)


def verification_lm(fmt: str, path: Path) -> tuple[str, LM]:
    """(runtime name, LM) an export of ``fmt`` is verified in: its serving runtime where installed."""
    from slmkit.runtimes import gguf_transformers, llama_cpp, onnx_genai, pytorch

    variant = Variant("verify", fmt, Path(path))
    if fmt == "hf":
        return "transformers", pytorch.load_lm(variant)
    if fmt == "onnx":
        return "onnxruntime-genai", onnx_genai.load_lm(variant)
    if fmt == "gguf":
        if llama_cpp.available():
            return "llama-cpp-python", llama_cpp.load_lm(variant)
        return "transformers-gguf", gguf_transformers.load_lm(variant)
    raise ValueError(f"unknown artifact format {fmt!r}")


def open_session(variant: Variant, backend: str, new_tokens: int, n_ctx: int, device: str, threads: int | None):
    """Load a variant on a backend for timing (load time is measured around this call)."""
    from slmkit.runtimes import llama_cpp, onnx_genai, pytorch, vllm

    if backend in ("torch_fp32", "torch_bf16"):
        return pytorch.TorchSession(variant, "float32" if backend == "torch_fp32" else "bfloat16", device)
    if backend == "onnxruntime_genai":
        return onnx_genai.OgSession(variant, new_tokens)
    if backend == "llama_cpp":
        return llama_cpp.LlamaCppSession(variant, n_ctx, threads)
    if backend == "vllm":
        return vllm.VllmSession(variant)
    raise ValueError(f"unknown backend {backend!r}")
