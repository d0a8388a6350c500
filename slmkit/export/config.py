"""Recipe schema of the export stage: the formats to write and their options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from slmkit.quantize.config import GgufOptions, OnnxOptions
from slmkit.runtimes.config import VerifyConfig
from slmkit.schema import StrictModel


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
