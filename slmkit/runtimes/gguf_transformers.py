"""GGUF files through transformers' GGUF loader (dequantized to fp32 PyTorch weights).

Not the runtime GGUF files are for, but one every setup has: export verification falls back to
it when llama.cpp is not installed.
"""

from __future__ import annotations

from slmkit.runtimes.base import Variant
from slmkit.runtimes.files import check_gguf_file
from slmkit.runtimes.pytorch import TorchLM, load_hf


def load_lm(variant: Variant, device: str = "cpu", threads: int | None = None) -> TorchLM:
    check_gguf_file(variant.path)
    model, tok = load_hf(variant.path.parent, "float32", device, gguf_file=variant.path.name)
    return TorchLM(model, tok, backend="transformers_gguf")
