"""Recipe configuration of the prune stage: one class per method, chosen by ``method:``.

Example (a ``prune`` stage in a recipe)::

    - prune: {method: osscar, target_params: 100M, calibration_samples: 128}
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from slmkit.schema import StrictModel

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbB]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_param_count(value: int | str) -> int:
    """``70M`` -> 70_000_000; also ``1.5B``, ``500k`` and plain integers."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"target_params: expected a count like 70M, 1.5B or 500000, got {value!r}")
    return int(float(match.group(1)) * _SCALE[match.group(2).lower()])


class CalibrationConfig(StrictModel):
    """Fields shared by every method: how much calibration data to stream and how."""

    calibration_samples: int = Field(
        128, ge=1, description="Calibration examples streamed through the model."
    )
    calibration_max_length: int = Field(
        512, ge=8, description="Tokens per calibration example (longer ones are cut)."
    )
    batch_size: int = Field(4, ge=1, description="Examples per calibration / evaluation forward pass.")
    calibration_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Compute dtype of the calibration pass; statistics always accumulate in float64.",
    )
    eval_samples: int = Field(
        64, ge=0, description="Eval-split examples for perplexity before/after (0 skips it)."
    )


def _exactly_one(model: StrictModel, names: tuple[str, ...]) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise ValueError(f"set exactly one of {', '.join(names)} (got {', '.join(given) or 'none'})")


class TargetParams(StrictModel):
    target_params: int | str | None = Field(
        None,
        description="Total parameter budget such as 70M or 1.5B; keep counts are chosen to land within 2%.",
    )

    @field_validator("target_params")
    @classmethod
    def _parse(cls, value):
        return None if value is None else parse_param_count(value)


class DepthConfig(CalibrationConfig, TargetParams):
    """Remove whole decoder layers. Example: ``{method: depth, keep_layers: 16}``."""

    method: Literal["depth"] = Field(description="Remove whole decoder layers.")
    importance: Literal["block_influence", "angular_block"] = Field(
        "block_influence",
        description="block_influence: drop the layers whose output is closest to their input (ShortGPT); "
        "angular_block: drop the contiguous block with the smallest angular distance (Gromov et al.).",
    )
    keep_layers: int | None = Field(None, ge=1, description="Number of decoder layers to keep.")
    remove_layers: int | None = Field(None, ge=1, description="Number of decoder layers to remove.")
    layers: list[int] | None = Field(
        None, min_length=1, description="Explicit 0-based indices of the layers to keep."
    )

    @model_validator(mode="after")
    def _one_target(self):
        _exactly_one(self, ("keep_layers", "remove_layers", "layers", "target_params"))
        return self


class WidthMlpConfig(CalibrationConfig, TargetParams):
    """Remove MLP neurons by mean |activation| (Minitron).

    Example: ``{method: width_mlp, keep_ratio: 0.5}``.
    """

    method: Literal["width_mlp"] = Field(
        description="Remove MLP intermediate neurons, the same count per layer."
    )
    keep_neurons: int | None = Field(
        None, ge=1, description="MLP intermediate neurons to keep in every layer."
    )
    keep_ratio: float | None = Field(
        None, gt=0, le=1, description="Fraction of MLP intermediate neurons to keep."
    )
    multiple_of: int = Field(
        1, ge=1, description="Round the kept neuron count down to a multiple of this (e.g. 64)."
    )

    @model_validator(mode="after")
    def _one_target(self):
        _exactly_one(self, ("keep_neurons", "keep_ratio", "target_params"))
        return self


class WidthAttentionConfig(CalibrationConfig, TargetParams):
    """Remove whole key/value groups with their query heads.

    Example: ``{method: width_attention, keep_kv_groups: 2}``.
    """

    method: Literal["width_attention"] = Field(
        description="Remove key/value head groups, the same count per layer."
    )
    keep_kv_groups: int | None = Field(None, ge=1, description="Key/value groups to keep in every layer.")
    keep_ratio: float | None = Field(
        None, gt=0, le=1, description="Fraction of key/value groups to keep (rounded)."
    )

    @model_validator(mode="after")
    def _one_target(self):
        _exactly_one(self, ("keep_kv_groups", "keep_ratio", "target_params"))
        return self


class OsscarConfig(WidthMlpConfig):
    """MLP neurons chosen to minimise each layer's reconstruction error, then down_proj refit.

    Example: ``{method: osscar, keep_ratio: 0.5, max_swaps: 64}``.
    """

    method: Literal["osscar"] = Field(
        description="OSSCAR: reconstruction-optimal MLP neuron selection with refit."
    )
    damping: float = Field(
        0.01,
        ge=0,
        description="Ridge term of the refit, as a fraction of each neuron's own energy diag(H^T H).",
    )
    max_swaps: int = Field(
        64, ge=0, description="Most accepted kept/removed swaps per layer in the local search."
    )
    swap_candidates: int = Field(
        8, ge=1, description="Cheapest-to-remove kept neurons tried per local-search step before it stops."
    )


class SparsityConfig(CalibrationConfig):
    """Wanda: zero weights by |W| * ||X||. Storage stays dense; dense CPU runtimes gain no speed.

    Example: ``{method: sparsity, pattern: "2:4"}`` or ``{method: sparsity, sparsity: 0.5}``.
    """

    method: Literal["sparsity"] = Field(description="Unstructured or N:M weight sparsity (Wanda).")
    sparsity: float | None = Field(
        None, gt=0, lt=1, description="Fraction of weights zeroed in every output row."
    )
    pattern: str | None = Field(
        None, description="N:M pattern such as 2:4: at most N non-zeros in each M inputs."
    )
    modules: list[Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]] = (
        Field(
            ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            description="Linear layers of each decoder layer to sparsify.",
        )
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value):
        if value is None:
            return value
        match = re.fullmatch(r"(\d+):(\d+)", value.strip())
        if not match or not 0 < int(match.group(1)) < int(match.group(2)):
            raise ValueError(f"pattern: expected N:M with 0 < N < M such as 2:4, got {value!r}")
        return value.strip()

    @model_validator(mode="after")
    def _one_target(self):
        _exactly_one(self, ("sparsity", "pattern"))
        return self


PruneConfig = Annotated[
    DepthConfig | WidthMlpConfig | WidthAttentionConfig | OsscarConfig | SparsityConfig,
    Field(discriminator="method"),
]
