"""Recipe schema of the quantize stage: one config class per backend, chosen by ``method``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from slmkit.export.config import GgufOptions, OnnxOptions, VerifyConfig
from slmkit.schema import StrictModel


def _verify_field():
    return Field(default_factory=VerifyConfig, description="How the written artifact is checked in its runtime.")


class OnnxQuantConfig(OnnxOptions):
    """ONNX Runtime GenAI graph with KV cache, quantized by its model builder.

    ```yaml
    quantize: {method: onnx, precision: int4, execution_provider: cpu, block_size: 32}
    ```
    """

    method: Literal["onnx"] = Field(description="Backend: onnxruntime-genai model builder.")
    verify: VerifyConfig = _verify_field()


class GgufQuantConfig(GgufOptions):
    """A GGUF file for llama.cpp / Ollama, written with the `gguf` package.

    ```yaml
    quantize: {method: gguf, type: Q4_0}
    ```
    """

    method: Literal["gguf"] = Field(description="Backend: GGUF writer (llama.cpp).")
    verify: VerifyConfig = _verify_field()


class TorchaoQuantConfig(StrictModel):
    """torchao quantization of the HF checkpoint, saved so transformers loads it back.

    ```yaml
    quantize: {method: torchao, scheme: int8_weight_only}
    ```
    """

    method: Literal["torchao"] = Field(description="Backend: torchao (PyTorch serving); needs `pip install 'slmkit[torchao]'`.")
    scheme: Literal["int8_weight_only", "int8_dynamic_activation_int8_weight", "int4_weight_only"] = Field(
        "int8_weight_only", description="torchao scheme: weight-only int8 / int4, or dynamic int8 activations + int8 weights."
    )
    group_size: Literal[32, 64, 128, 256] = Field(128, description="Group size of int4_weight_only.")
    verify: VerifyConfig = _verify_field()


class LlmCompressorQuantConfig(StrictModel):
    """FP8 dynamic or W4A16 (GPTQ) in compressed-tensors format for vLLM, via llm-compressor.

    ```yaml
    quantize: {method: llmcompressor, scheme: W4A16, calibration_samples: 128}
    ```
    """

    method: Literal["llmcompressor"] = Field(description="Backend: llm-compressor; needs `pip install 'slmkit[gpu]'`.")
    scheme: Literal["FP8_DYNAMIC", "W4A16"] = Field("FP8_DYNAMIC", description="FP8 dynamic (no calibration) or W4A16 GPTQ.")
    calibration_samples: int = Field(128, ge=1, description="Calibration examples from `data.calibration` (W4A16 only).")
    max_seq_length: int = Field(512, ge=16, description="Token length calibration examples are cut to.")
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"], description="Modules left unquantized.")
    verify: VerifyConfig = _verify_field()


QuantizeConfig = Annotated[
    OnnxQuantConfig | GgufQuantConfig | TorchaoQuantConfig | LlmCompressorQuantConfig,
    Field(discriminator="method"),
]

