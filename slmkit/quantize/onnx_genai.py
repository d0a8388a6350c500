"""ONNX Runtime GenAI export through its model builder (int4 / int8 / fp16 / fp32, KV cache).

The builder writes ``model.onnx`` (+ ``model.onnx.data``), ``genai_config.json`` and the
tokenizer files; the directory runs with ``onnxruntime_genai`` alone. Measured on a 2-core CPU
(DESIGN.md): its int4 graph decodes ~4x faster than PyTorch fp32, which is why it is the
default CPU path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

from slmkit.errors import InputError, SlmkitError
from slmkit.quantize.config import OnnxOptions
from slmkit.quantize.files import disk_errors, ensure_free_space, read_causal_lm_config, weights_size

# architectures slmkit exports and tests; the builder knows more, but these are the ones verified
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Phi3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "GraniteForCausalLM",
    "OlmoForCausalLM", "SmolLM3ForCausalLM",
)
_BITS = {"int4": 4, "int8": 8, "fp16": 16, "fp32": 32}
_SIZE_FACTOR = {"int4": 0.2, "int8": 0.35, "fp16": 0.55, "fp32": 1.1}
# the builder logs every MatMul it quantizes at INFO; keep it out of the user's terminal
_NOISY_LOGGERS = ("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer")


def builder_options(opts: OnnxOptions) -> list[str]:
    """The builder's KEY=VALUE extra options for these settings."""
    if opts.precision not in _BITS:
        raise InputError(f"onnx.precision {opts.precision!r} is unknown; expected one of {', '.join(_BITS)}")
    if opts.precision not in ("int4", "int8"):
        return []
    extra = [f"block_size={opts.block_size}"]
    if opts.algo != "default":
        extra.append(f"algo_config={opts.algo}")
    if opts.accuracy_level:
        extra.append(f"accuracy_level={opts.accuracy_level}")
    return extra


def check_architecture(model_dir: Path) -> dict:
    config = read_causal_lm_config(model_dir)
    arch = config["architectures"][0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise InputError(
            f"{model_dir / 'config.json'}: architecture {arch} cannot be exported to ONNX GenAI; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if (config.get("quantization_config") or {}).get("quant_method") == "gguf":
        raise InputError(
            f"{model_dir / 'config.json'}: carries quantization_config.quant_method=gguf (left by transformers' GGUF "
            "loader); save the dequantized model without it (slmkit's save_model does) before exporting"
        )
    return config


@contextlib.contextmanager
def _quiet_builder():
    """Capture the builder's prints and progress bars; restore logger levels afterwards."""
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    buf = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def build_onnx(model_dir: Path, out_dir: Path, opts: OnnxOptions, cache_dir: Path) -> dict:
    """Build the ONNX GenAI directory ``out_dir`` from an HF causal LM; returns manifest details."""
    from onnxruntime_genai.models import builder

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_architecture(model_dir)
    extra = builder_options(opts)
    ensure_free_space(out_dir.parent, int(weights_size(model_dir) * _SIZE_FACTOR[opts.precision]), "onnx export")
    with disk_errors(out_dir, "onnx export"), _quiet_builder() as log:
        try:
            parsed = builder.parse_extra_options(
                None, str(model_dir), str(out_dir), opts.precision, opts.execution_provider, str(cache_dir), extra
            )
            builder.create_model(
                None, str(model_dir), str(out_dir), opts.precision, opts.execution_provider, str(cache_dir), **parsed
            )
        except (NotImplementedError, ValueError, KeyError) as e:
            tail = log.getvalue()[-2000:]
            raise SlmkitError(f"onnxruntime-genai builder failed on {model_dir}: {e}\n{tail}") from e
    if not (out_dir / "genai_config.json").is_file():
        raise SlmkitError(f"onnxruntime-genai builder wrote no genai_config.json into {out_dir}")
    return {
        "precision": opts.precision, "execution_provider": opts.execution_provider, "bits": _BITS[opts.precision],
        "block_size": opts.block_size if opts.precision in ("int4", "int8") else None,
        "algo": opts.algo if opts.precision in ("int4", "int8") else None,
        "accuracy_level": opts.accuracy_level if opts.precision in ("int4", "int8") else None,
    }


@contextlib.contextmanager
def builder_cache(work_dir: Path | None):
    """The builder's scratch directory: under the stage's work dir, else a temporary one."""
    if work_dir is not None:
        yield Path(work_dir) / "onnx_builder_cache"
    else:
        with tempfile.TemporaryDirectory(prefix="slmkit-onnx-") as tmp:
            yield Path(tmp)
