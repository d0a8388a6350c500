"""Recipe schema of export verification (``verify:`` of quantize and export stages); no torch import."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
