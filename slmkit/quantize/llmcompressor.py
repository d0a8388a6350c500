"""FP8 dynamic and W4A16 (GPTQ) checkpoints in compressed-tensors format for vLLM, via llm-compressor.

llm-compressor is the optional extra ``gpu``; without it the method fails before any work with
an error naming the extra. FP8 dynamic needs no calibration data; W4A16 runs GPTQ over the
recipe's calibration split, whose token hash goes into the manifest.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from slmkit.errors import InputError
from slmkit.quantize.config import LlmCompressorQuantConfig
from slmkit.quantize.files import disk_errors, ensure_free_space, read_causal_lm_config, weights_size

_BITS = {"FP8_DYNAMIC": 8, "W4A16": 4}
_GROUP = {"FP8_DYNAMIC": None, "W4A16": 128}  # llm-compressor's preset scheme group sizes


def require_llmcompressor() -> None:
    if importlib.util.find_spec("llmcompressor") is None:
        raise InputError(
            "quantize method llmcompressor (FP8 / W4A16 for vLLM) needs the optional extra: pip install 'slmkit[gpu]'"
        )


def calibration_hash(token_ids: list[list[int]]) -> str:
    """A stable hash of the calibration token ids, recorded in the manifest."""
    return hashlib.sha256(json.dumps(token_ids).encode()).hexdigest()


def quantize_llmcompressor(
    model_dir: Path, out_dir: Path, cfg: LlmCompressorQuantConfig, calibration: list[list[int]] | None = None
) -> dict:
    """One-shot quantization of ``model_dir`` into ``out_dir`` (compressed-tensors); returns details."""
    require_llmcompressor()
    import torch
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    read_causal_lm_config(model_dir)
    if cfg.scheme == "W4A16" and not calibration:
        raise InputError("llmcompressor W4A16 (GPTQ) needs calibration data: set data.calibration in the recipe")
    ensure_free_space(out_dir.parent, int(weights_size(model_dir) * 0.6), "llmcompressor quantize")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if cfg.scheme == "FP8_DYNAMIC":
        oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=cfg.ignore))
    else:
        from datasets import Dataset

        rows = [{"input_ids": ids[: cfg.max_seq_length]} for ids in calibration[: cfg.calibration_samples]]
        oneshot(
            model=model, dataset=Dataset.from_list(rows),
            recipe=GPTQModifier(targets="Linear", scheme="W4A16", ignore=cfg.ignore),
            max_seq_length=cfg.max_seq_length, num_calibration_samples=len(rows),
        )
    with disk_errors(out_dir, "llmcompressor quantize"):
        model.save_pretrained(out_dir, save_compressed=True)
        tokenizer.save_pretrained(out_dir)
    return {
        "scheme": cfg.scheme, "bits": _BITS[cfg.scheme], "group_size": _GROUP[cfg.scheme], "format": "compressed-tensors",
        "calibration_hash": calibration_hash(calibration[: cfg.calibration_samples]) if cfg.scheme == "W4A16" else None,
    }
