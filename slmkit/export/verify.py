"""Verify a written artifact by loading it in the runtime that will serve it.

The source model greedily continues fixed prompts; each runtime is then fed exactly those
tokens (teacher forcing) and its next-token logits at every position are compared with the
source's: max |logit difference| and top-1 agreement. Full-precision exports must agree
everywhere and stay within a logit tolerance; int8 / int4 exports must reach a configurable
top-1 agreement (default 0.90).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slmkit.errors import SlmkitError
from slmkit.export.config import VerifyConfig


class VerificationFailed(SlmkitError):
    """A written artifact does not load in its runtime or does not match the source model."""


@dataclass
class Reference:
    """Teacher-forced token sequences and the source model's logits at every position."""

    sequences: list[list[int]]
    logits: list[np.ndarray]  # one [T, V] float32 array per sequence


# --- pure comparison -----------------------------------------------------------------------


def compare_logits(ref: list[np.ndarray], got: list[np.ndarray]) -> dict:
    """Top-1 agreement (over all positions of all sequences) and max |difference| of logits."""
    agree, total, max_diff = 0, 0, 0.0
    for r, g in zip(ref, got, strict=True):
        if r.shape[0] != g.shape[0]:
            raise ValueError(f"logits cover {g.shape[0]} positions, expected {r.shape[0]}")
        width = min(r.shape[1], g.shape[1])  # runtimes may pad the vocabulary
        r, g = r[:, :width], g[:, :width]
        agree += int((r.argmax(-1) == g.argmax(-1)).sum())
        total += r.shape[0]
        max_diff = max(max_diff, float(np.abs(r - g).max()))
    return {"top1_agreement": agree / total, "max_abs_logit_diff": max_diff, "positions": total}


def judge(metrics: dict, precision: str, cfg: VerifyConfig) -> list[str]:
    """Problems with ``metrics`` for an export of ``precision`` (fp32 | fp16 | quantized)."""
    problems = []
    top1, diff = metrics["top1_agreement"], metrics["max_abs_logit_diff"]
    if precision == "quantized":
        if top1 < cfg.min_top1_quantized:
            problems.append(f"top-1 agreement {top1:.3f} < required {cfg.min_top1_quantized:.3f}")
        return problems
    if top1 < cfg.min_top1_full_precision:
        problems.append(f"top-1 agreement {top1:.3f} < required {cfg.min_top1_full_precision:.3f}")
    limit = cfg.max_abs_diff_fp32 if precision == "fp32" else cfg.max_abs_diff_fp16
    if diff > limit:
        problems.append(f"max |logit diff| {diff:.4g} > allowed {limit:.4g} for {precision}")
    return problems


# --- source model --------------------------------------------------------------------------


def reference_logits(model_dir: Path, cfg: VerifyConfig) -> Reference:
    """Greedy continuations of ``cfg.prompts`` by the source model and its fp32 logits on them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sequences, logits = [], []
    with torch.no_grad():
        for prompt in cfg.prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            for _ in range(cfg.new_tokens):  # plain greedy loop: no generation-config surprises
                nxt = model(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            sequences.append(ids[0].tolist())
            logits.append(model(ids).logits[0].float().numpy())
    return Reference(sequences, logits)


# --- runtimes ------------------------------------------------------------------------------


def transformers_logits(path: Path, sequences: list[list[int]], gguf_file: str | None = None) -> list[np.ndarray]:
    """Logits from transformers: an HF directory, or a GGUF file through its GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
    with torch.no_grad():
        return [model(torch.tensor([s])).logits[0].float().numpy() for s in sequences]


def onnx_genai_logits(onnx_dir: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """Logits from onnxruntime-genai, one token at a time through its KV cache."""
    import onnxruntime_genai as og

    model = og.Model(str(onnx_dir))
    out = []
    for seq in sequences:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(seq) + 1)
        gen = og.Generator(model, params)
        rows = []
        for tok in seq:  # get_logits returns the last position only
            gen.append_tokens([tok])
            rows.append(np.array(gen.get_logits())[0, -1].astype(np.float32))
        out.append(np.stack(rows))
    return out


def llama_cpp_logits(gguf_path: Path, sequences: list[list[int]]) -> list[np.ndarray]:
    """Logits from llama-cpp-python (the llama.cpp runtime itself)."""
    from llama_cpp import Llama

    n_ctx = max(len(s) for s in sequences) + 8
    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=True, verbose=False)
    out = []
    for seq in sequences:
        llm.reset()
        llm.eval(seq)
        out.append(np.array(llm.scores[: len(seq)], dtype=np.float32))
    return out


def has_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def runtime_logits(kind: str, path: Path, sequences: list[list[int]]) -> tuple[str, list[np.ndarray]]:
    """(runtime name, logits) for an artifact of ``kind``: hf | onnx | gguf."""
    path = Path(path)
    if kind == "hf":
        return "transformers", transformers_logits(path, sequences)
    if kind == "onnx":
        check_onnx_files(path)
        return "onnxruntime-genai", onnx_genai_logits(path, sequences)
    if kind == "gguf":
        check_gguf_file(path)
        if has_llama_cpp():
            return "llama-cpp-python", llama_cpp_logits(path, sequences)
        return "transformers-gguf", transformers_logits(path.parent, sequences, gguf_file=path.name)
    raise ValueError(f"unknown artifact kind {kind!r}")


# --- integrity checks before a runtime maps the files (a truncated file can crash it) --------


def check_onnx_files(onnx_dir: Path) -> None:
    """genai_config.json parses and every external weight lies inside its data file."""
    import json

    import onnx

    try:
        config = json.loads((onnx_dir / "genai_config.json").read_text())
        model_file = onnx_dir / config["model"]["decoder"]["filename"]
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception as e:  # any parse error means the directory is not a usable export
        raise VerificationFailed(f"{onnx_dir}: not a loadable onnxruntime-genai directory ({e})") from e
    needed: dict[str, int] = {}
    for init in graph.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in init.external_data}
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        needed[info["location"]] = max(needed.get(info["location"], 0), end)
    for name, end in needed.items():
        data = onnx_dir / name
        size = data.stat().st_size if data.is_file() else -1
        if size < end:
            raise VerificationFailed(f"{data}: {size} bytes, but the graph references {end}; the file is truncated or missing")


def check_gguf_file(path: Path) -> None:
    """The header parses and every tensor's data lies inside the file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:
        raise VerificationFailed(f"{path}: not a readable GGUF file ({e})") from e
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise VerificationFailed(f"{path}: tensor {t.name} ends past the end of the file; it is truncated")


# --- the check a stage calls -----------------------------------------------------------------


def verify_artifact(kind: str, path: Path, reference: Reference, precision: str, cfg: VerifyConfig, reporter=None) -> dict:
    """Load ``path`` in its runtime, compare with ``reference``; raise or warn per ``cfg.mode``.

    A file that does not load always raises: ``mode: warn`` relaxes the numeric thresholds,
    it never lets an unloadable file become an artifact.
    """
    try:
        runtime, got = runtime_logits(kind, Path(path), reference.sequences)
    except VerificationFailed:
        raise
    except Exception as e:  # the runtime's own error says why it could not load the file
        raise VerificationFailed(f"{path}: {kind} export does not load in its runtime: {type(e).__name__}: {e}") from e
    metrics = compare_logits(reference.logits, got)
    problems = judge(metrics, precision, cfg)
    result = {"runtime": runtime, "precision": precision, **metrics, "passed": not problems, "problems": problems}
    if problems:
        message = f"verification of the {kind} export ({runtime}, {precision}) failed: " + "; ".join(problems)
        if cfg.mode == "error":
            raise VerificationFailed(message + " (set verify.mode: warn to keep it anyway)")
        if reporter is not None:
            reporter.warn(message)
    return result
