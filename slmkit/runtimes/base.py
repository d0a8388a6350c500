"""What every runtime shares: the forms a model artifact comes in, and the LM handle they all give.

A runtime module (``pytorch``, ``onnx_genai``, ``llama_cpp``, ``gguf_transformers``, ``vllm``)
owns four jobs for its format: loading, teacher-forced logits, greedy generation and a speed
session. Libraries are imported inside the functions that need them, so a missing optional
runtime costs one skipped row, not an import error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class BatchDoesNotFit(Exception):
    """A batch size this machine or runtime cannot hold: the row is skipped with this message."""


@dataclass(frozen=True)
class Variant:
    """One loadable form of a model artifact: an HF directory, an ONNX GenAI directory or a GGUF file."""

    model_id: str  # "teacher" or the artifact id "<stage>/v<N>"
    format: str  # hf | onnx | gguf
    path: Path  # directory (hf, onnx) or file (gguf)


class LM(Protocol):
    """Quality through any runtime: teacher-forced logits and greedy answers (EOS included)."""

    backend: str

    def logits(self, seqs: list[list[int]]) -> list[torch.Tensor]: ...  # one float32 [T, V] per sequence

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]: ...


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


def trim_at_eos(ids: list[int], eos: set[int]) -> list[int]:
    """Keep tokens up to and including the first end-of-sequence: it is part of the answer."""
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


def eos_ids(value) -> set[int]:
    if value is None:
        return set()
    return set(value) if isinstance(value, (list, tuple)) else {int(value)}
