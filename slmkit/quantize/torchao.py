"""torchao quantization of an HF checkpoint, saved as safetensors that transformers loads back.

int8 weight-only and int8 dynamic-activation + int8-weight run on CPU and GPU. int4
weight-only uses torchao's tinygemm packing, whose kernels exist for CUDA only (the CPU int4
path of torchao 0.18 needs the separate `mslk` kernel package), so it is refused on CPU with an
error that names the alternatives.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slmkit.errors import InputError
from slmkit.quantize.config import TorchaoQuantConfig
from slmkit.quantize.files import disk_errors, ensure_free_space, read_causal_lm_config, weights_size

_BITS = {"int8_weight_only": 8, "int8_dynamic_activation_int8_weight": 8, "int4_weight_only": 4}


def require_torchao() -> None:
    if importlib.util.find_spec("torchao") is None:
        raise InputError("quantize method torchao needs the torchao package: pip install 'slmkit[torchao]'")


def torchao_config(cfg: TorchaoQuantConfig, cuda: bool):
    """The torchao config object for ``cfg.scheme``."""
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    if cfg.scheme == "int8_weight_only":
        return Int8WeightOnlyConfig()
    if cfg.scheme == "int8_dynamic_activation_int8_weight":
        return Int8DynamicActivationInt8WeightConfig()
    if cfg.scheme == "int4_weight_only":
        if not cuda:
            raise InputError(
                "torchao int4_weight_only needs a CUDA GPU (tinygemm kernels); on CPU use scheme "
                "int8_weight_only, or method onnx (precision int4) / gguf (type Q4_0) for 4-bit CPU serving"
            )
        return Int4WeightOnlyConfig(group_size=cfg.group_size, int4_packing_format="tile_packed_to_4d")
    raise InputError(f"torchao scheme {cfg.scheme!r} is unknown; expected one of {', '.join(_BITS)}")


def quantize_torchao(model_dir: Path, out_dir: Path, cfg: TorchaoQuantConfig) -> dict:
    """Quantize ``model_dir`` with torchao and save it to ``out_dir``; returns manifest details."""
    require_torchao()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    read_causal_lm_config(model_dir)
    cuda = torch.cuda.is_available()
    quant = TorchAoConfig(quant_type=torchao_config(cfg, cuda))
    # int4 tinygemm kernels take bf16 activations; int8 keeps the source's fp32 math on CPU
    dtype = torch.bfloat16 if cfg.scheme == "int4_weight_only" else torch.float32
    ensure_free_space(out_dir.parent, int(weights_size(model_dir) * 0.6), "torchao quantize")
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, quantization_config=quant, device_map="cuda" if cuda else "cpu"
    )
    with disk_errors(out_dir, "torchao quantize"):
        model.save_pretrained(out_dir, safe_serialization=True)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
    return {"scheme": cfg.scheme, "bits": _BITS[cfg.scheme],
            "group_size": cfg.group_size if cfg.scheme == "int4_weight_only" else None,
            "device": "cuda" if cuda else "cpu"}
