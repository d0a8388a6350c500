"""Recipe schema of the export stage and of the verification every written artifact goes through."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from slmkit.schema import StrictModel

DEFAULT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Write a short note to a colleague about the meeting tomorrow.",
]


class VerifyConfig(StrictModel):
    """Load what was written in its own runtime and compare next-token logits with the source model.

    The source model greedily continues each prompt; the runtime is then fed the same tokens
    (teacher forcing) and its top-1 prediction at every position is compared with the source's.

    ```yaml
    verify: {mode: error, min_top1_quantized: 0.9}
    ```
    """

    mode: Literal["error", "warn"] = Field(
        "error", description="`error`: a failed check fails the stage and commits nothing; `warn`: report it and go on."
    )
    prompts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMPTS), min_length=1,
        description="Fixed prompts the source model continues; the comparison runs on prompt + continuation.",
    )
    new_tokens: int = Field(16, ge=0, le=256, description="Greedy tokens the source adds to each prompt before comparing.")
    min_top1_full_precision: float = Field(
        1.0, ge=0.0, le=1.0, description="Top-1 agreement required of fp32 / fp16 / bf16 exports (1.0 = every position)."
    )
    min_top1_quantized: float = Field(
        0.90, ge=0.0, le=1.0, description="Top-1 agreement required of int8 / int4 / Q8_0 / Q4 exports."
    )
    max_abs_diff_fp32: float = Field(
        1e-3, gt=0, description="Largest allowed |logit difference| of an fp32 export against the source."
    )
    max_abs_diff_fp16: float = Field(
        0.5, gt=0, description="Largest allowed |logit difference| of an fp16 / bf16 export against the source."
    )


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

    @model_validator(mode="after")
    def _valid_combination(self) -> OnnxOptions:
        # onnxruntime has no fp16 CPU kernels for the attention ops the builder emits
        if self.precision == "fp16" and self.execution_provider == "cpu":
            raise ValueError("precision fp16 needs execution_provider: cuda; on cpu use fp32, int8 or int4")
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


class ExportConfig(StrictModel):
    """Write several deployable formats from one input model, each verified in its runtime.

    ```yaml
    export: {formats: [hf, onnx, gguf], onnx: {precision: int4}, gguf: {type: Q4_0}}
    ```
    """

    formats: list[Literal["hf", "onnx", "gguf"]] = Field(
        default_factory=lambda: ["hf", "onnx", "gguf"], min_length=1,
        description="Formats to write: `hf` (safetensors + tokenizer), `onnx` (onnxruntime-genai directory), `gguf` (llama.cpp file).",
    )
    onnx: OnnxOptions = Field(default_factory=OnnxOptions, description="Options of the ONNX GenAI export.")
    gguf: GgufOptions = Field(default_factory=GgufOptions, description="Options of the GGUF export.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="How each written format is checked.")

    @field_validator("formats")
    @classmethod
    def _unique(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError(f"formats lists a format twice: {formats}")
        return formats
