"""Recipe schema of the quantize stage: one config class per backend, chosen by ``method``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from slmkit.runtimes.config import VerifyConfig
from slmkit.schema import StrictModel


class CalibrationConfig(StrictModel):
    """Calibrated rounding of 4-/8-bit weights onto the target format's own grid, on `data.calibration`.

    ```yaml
    onnx: {precision: int4, calibration: quantease}            # or {method: gptq, samples: 128}
    ```

    Layer by layer (GPTQ's order): each linear is quantized to minimise its output error on the
    calibration inputs, which come from the model with the earlier layers already quantized.
    """

    method: Literal["rtn", "gptq", "quantease"] = Field(
        "rtn", description="`rtn`: round to nearest, no data (the runtime's own quantizer); `gptq`: Frantar et "
        "al. 2022; `quantease`: coordinate descent on the same objective (Behdin et al. 2023), started from GPTQ.")
    samples: int = Field(128, ge=1, description="Calibration blocks of `seq_len` tokens cut from data.calibration "
                         "(fewer when the data is shorter).")
    seq_len: int = Field(512, ge=16, description="Tokens per calibration block.")
    passes: int = Field(3, ge=1, le=50, description="QuantEase coordinate-descent passes over each weight.")
    init: Literal["gptq", "rtn"] = Field("gptq", description="QuantEase's starting point.")
    percdamp: float = Field(0.01, ge=0, le=1, description="GPTQ dampening, as a share of the Hessian's mean diagonal.")
    act_order: bool = Field(False, description="GPTQ: quantize columns by decreasing Hessian diagonal (scales "
                            "fixed up front, since the runtimes store no column permutation).")
    lm_head: bool = Field(True, description="Calibrate the output projection too (with tied embeddings the "
                          "ONNX graph gathers the embedding from the same quantized matrix).")
    batch_size: int = Field(8, ge=1, description="Calibration blocks per forward pass.")
    dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16", description="Precision of the calibration forward passes (bf16 autocast: AMX on CPU; the "
        "Hessians are summed in fp32 and the weights quantized in fp32 either way).")


def _calibration_shorthand(value):
    # `calibration: quantease` is short for `calibration: {method: quantease}`
    return {"method": value} if isinstance(value, str) else value


Calibration = Annotated[CalibrationConfig, BeforeValidator(_calibration_shorthand)]


class OnnxOptions(StrictModel):
    """Options of the onnxruntime-genai model builder (also used by ``export.onnx``)."""

    precision: Literal["int4", "int8", "fp16", "fp32"] = Field(
        "int4", description="Weight precision of the ONNX graph; int4 / int8 are weight-only (MatMulNBits)."
    )
    execution_provider: Literal["cpu", "cuda"] = Field("cpu", description="Execution provider the graph is built for.")
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        32, description="Quantization block size of int4 / int8 weights (smaller: more accurate, larger file)."
    )
    algo: Literal["default", "k_quant", "k_quant_last", "k_quant_mixed"] = Field(
        "default", description="int4 / int8 weight rounding (the builder's algo_config): `default` round-to-nearest; "
        "`k_quant_mixed` keeps the most sensitive MatMuls (lm_head, first/last layers, every third qkv/v/down "
        "projection) in int8: measured on the quickstart student, top-1 agreement with fp32 0.55 -> 0.70 for "
        "a 16% slower decode.")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4, description="MatMulNBits compute type: 4 = int8 activations (fastest on CPU), 1 = fp32, 0 = builder default."
    )
    mixed_precision: list[Literal["last_matmul:int8", "mixed_layers:int8", "last_matmul:int4", "mixed_layers:int4"]] = (
        Field(default_factory=list, description="MatMul groups kept at another width than the int4 body (the "
              "builder's matmul_mixed_precision): `last_matmul:int8` keeps the output head (and a tied embedding, "
              "gathered from the head's own int8 blocks, as llama.cpp keeps a Q4_0 model's token_embd in Q8_0) "
              "in int8: on SmolLM2-135M top-1 agreement 0.59 -> 0.68 for a 16% larger file; `mixed_layers:int8` "
              "also the most sensitive layers (first/last eighth, every third qkv/v/down projection)."))
    calibration: Calibration = Field(
        default_factory=CalibrationConfig, description="How int4 / int8 weights are rounded: `rtn` (default: the "
        "builder's own rounding), `gptq` or `quantease` on calibration data; the graph is the builder's with the "
        "MatMulNBits weights replaced (each node keeps the bits and symmetry `algo` gave it), so decode speed is "
        "unchanged.")

    @model_validator(mode="after")
    def _valid_combination(self) -> OnnxOptions:
        # onnxruntime has no fp16 CPU kernels for the attention ops the builder emits
        if self.precision == "fp16" and self.execution_provider == "cpu":
            raise ValueError("precision fp16 needs execution_provider: cuda; on cpu use fp32, int8 or int4")
        if self.calibration.method != "rtn" and self.precision not in ("int4", "int8"):
            raise ValueError(f"calibration.method {self.calibration.method} rounds int4 / int8 weights; precision "
                             f"{self.precision} has none (use calibration: rtn, or precision int4 / int8)")
        return self


class GgufOptions(StrictModel):
    """Options of the GGUF writer (also used by ``export.gguf``)."""

    type: Literal["F32", "F16", "Q8_0", "Q4_0", "Q4_K"] = Field(
        "Q4_0", description="Tensor type of the 2-D weights. Q4_K needs a gguf package that can write it."
    )
    output_type: Literal["F32", "F16", "Q8_0", "Q4_0"] | None = Field(
        None, description="Type of the embedding / output matrix; default: Q8_0 for 4-bit bodies, else same as `type`."
    )
    tokenizer_pre: str | None = Field(
        None, description="llama.cpp pre-tokenizer name (e.g. `llama-bpe`, `qwen2`, `smollm`); default: detected "
        "from the tokenizer as llama.cpp's converter does. Set it for a tokenizer slmkit does not recognise.",
    )
    calibration: Calibration = Field(
        default_factory=CalibrationConfig, description="How Q4_0 / Q8_0 weights of the decoder's linears are "
        "rounded: `rtn` (default, llama.cpp's own), `gptq` or `quantease` on calibration data (Q4_0 / Q8_0 only).")

    @model_validator(mode="after")
    def _calibrated_types(self) -> GgufOptions:
        if self.calibration.method != "rtn" and self.type not in ("Q4_0", "Q8_0"):
            raise ValueError(f"calibration.method {self.calibration.method} writes Q4_0 or Q8_0 blocks; type "
                             f"{self.type} is not one (asymmetric and k-quant grids are not calibrated)")
        return self


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

