"""Recipe schema of the distill stage. Every default lives here; docs/recipes.md is generated from it.

Sample stage (word-level forward KL, then on-policy forward KL, the GKD recipe)::

    stages:
      - distill: {method: kd, loss: {kind: forward_kl}, max_steps: 500}
      - distill: {method: kd, loss: {kind: forward_kl}, on_policy: {fraction: 1.0}, max_steps: 500}

Ranking / classification recipes distill scores instead (``slmkit.tasks.config.ScoreDistillConfig``)::

      - distill: {method: score_kd, max_steps: 300, batch_size: 32}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from slmkit.schema import StrictModel
from slmkit.tasks.config import ScoreDistillConfig


class HiddenLossConfig(StrictModel):
    kind: Literal["mse", "cosine"] = Field("mse", description="Distance between matched hidden states.")
    weight: float = Field(1.0, ge=0, description="Weight of the hidden-state loss added to the logit loss.")
    layer_map: dict[int, int] | None = Field(
        None,
        description="Student layer -> teacher layer (1-based block outputs). Default: every student layer "
        "mapped to the teacher layer at the same relative depth. A learned linear projection is added "
        "when the widths differ.",
    )


class LossConfig(StrictModel):
    kind: Literal["forward_kl", "reverse_kl", "jsd", "tvd", "skew_forward_kl", "skew_reverse_kl"] = Field(
        "forward_kl", description="Divergence between teacher and student next-token distributions."
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature applied to both models' logits.")
    t2_scaling: bool = Field(True, description="Multiply the divergence by temperature^2 (Hinton et al.).")
    kd_weight: float = Field(1.0, ge=0, description="Weight of the divergence term.")
    ce_weight: float = Field(0.0, ge=0, description="Weight of the hard-label cross-entropy term.")
    beta: float = Field(0.5, ge=0, le=1, description="jsd only: 0 is forward KL, 1 is reverse KL.")
    alpha: float = Field(0.1, ge=0, le=1, description="skew KLs only: mixing weight (0 is the plain KL).")
    tokens: Literal["auto", "response", "all"] = Field(
        "auto",
        description="Which tokens count: 'response' (assistant turns / completions), 'all' (every "
        "non-padding token), 'auto' (the dataset's own mask: response for chat, all for text).",
    )
    chunk_size: int = Field(
        256, ge=1, description="Tokens per lm_head chunk: only this many rows of logits exist at once."
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="Fuse the forward-KL chunk math (softmaxes, KL, CE, gradient) with torch.compile. "
        "auto: on for vocabularies of at least 16k tokens when a C++ compiler (CPU) or Triton (CUDA) is "
        "present; the first step then pays a one-off compilation (seconds, cached on disk).",
    )
    hidden: HiddenLossConfig | None = Field(None, description="Optional hidden-state loss.")
    cross_tokenizer: Literal["uld", "align"] | None = Field(
        None,
        description="Logit distillation between a teacher and a student whose tokenizers differ (each row "
        "tokenized by both from the same text, positions aligned by character offsets). uld: Wasserstein "
        "distance between the sorted probability vectors (Boizard et al. 2024); align: `kind` over the "
        "tokens both vocabularies share as strings where the two next tokens match one-to-one, ULD at the "
        "other aligned positions. null: the tokenizers must be the same.",
    )

    @model_validator(mode="after")
    def _some_loss(self):
        if self.kd_weight == 0 and self.ce_weight == 0 and self.hidden is None:
            raise ValueError("kd_weight and ce_weight are both 0 and no hidden loss: nothing to train on")
        return self

    def spec(self):
        """The loss's numbers as the pure loss functions take them (``slmkit.distill.losses.LossSpec``)."""
        from slmkit.distill.losses import LossSpec  # torch: only when training, never at validation

        return LossSpec(
            kind=self.kind, temperature=self.temperature, t2_scaling=self.t2_scaling,
            kd_weight=self.kd_weight, ce_weight=self.ce_weight, beta=self.beta, alpha=self.alpha,
        )


class GenerationConfig(StrictModel):
    do_sample: bool = Field(False, description="Sample (true) or greedy decoding (false).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(128, ge=1, description="Longest generated response, in tokens.")
    batch_size: int = Field(8, ge=1, description="Rows decoded together (continuous batching: a finished row takes "
                            "the next prompt); decoding is bound by reading the weights, so more rows is faster.")
    dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16", description="Weights' precision while generating (a copy; training keeps its own): bfloat16 "
        "is about 1.5-2x faster on a CPU with AMX, float32 gives model.generate's greedy tokens exactly.")


class SequenceKDConfig(GenerationConfig):
    """Teacher-generated responses (Kim & Rush 2016), saved as a dataset artifact and reused."""


class OnPolicyConfig(StrictModel):
    fraction: float = Field(
        0.0, ge=0, le=1, description="Share of steps trained on responses sampled from the current student (GKD)."
    )
    do_sample: bool = Field(True, description="Sample the student (true) or decode greedily.")
    temperature: float = Field(1.0, gt=0, description="Student sampling temperature.")
    max_new_tokens: int = Field(64, ge=1, description="Longest sampled response, in tokens.")
    dtype: Literal["bfloat16", "float32"] = Field(
        "bfloat16", description="Weights' precision while the student samples (a copy of its weights).")


class TeacherCacheConfig(StrictModel):
    top_k: int = Field(64, ge=1, description="Teacher log-probabilities kept per token; the rest is one tail bucket.")
    shard_examples: int = Field(512, ge=1, description="Examples per cache shard file.")
    batch_size: int = Field(8, ge=1, description="Examples per teacher forward while building the cache.")
    format: Literal["int8", "fp16", "fp32"] = Field(
        "int8", description="How each cached token is stored: int8 (Elias-Fano coded ids, 8-bit log-probs with a "
        "per-row scale and the tail mass: 159 bytes at k=64 on a 49k vocabulary), fp16 (222 bytes) or fp32 "
        "(int32 ids + fp32 log-probs, 512 bytes: the uncompressed reference).")


class OptimizerConfig(StrictModel):
    lr: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps before the cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a share of lr.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm (null: no clipping).")


class QuantAwareConfig(StrictModel):
    """Train for the int4 / int8 export: decoder linears fake-quantized on the target grid (straight-through)."""

    bits: Literal[4, 8] = Field(4, description="Weight bits of the export the student is trained for.")
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        32, description="Block size of the ONNX export (GGUF Q4_0 / Q8_0 blocks are always 32).")
    format: Literal["onnx", "gguf"] = Field(
        "onnx", description="Whose grid: onnxruntime MatMulNBits (symmetric, as `algo: default` writes it) or "
        "GGUF Q4_0 / Q8_0; export with `calibration: rtn` so the file holds the weights the student was trained with.")


class DistillConfig(StrictModel):
    method: Literal["kd"] = Field("kd", description="Distillation method (kd: logit distillation).")
    loss: LossConfig = Field(default_factory=LossConfig, description="What the student is trained on.")
    data: Literal["off_policy", "sequence_kd", "offline_teacher"] = Field(
        "off_policy",
        description="off_policy: the dataset's responses; sequence_kd: teacher-generated responses; "
        "offline_teacher: train from a precomputed teacher top-k cache without loading the teacher.",
    )
    sequence_kd: SequenceKDConfig = Field(default_factory=SequenceKDConfig, description="data: sequence_kd settings.")
    on_policy: OnPolicyConfig = Field(default_factory=OnPolicyConfig, description="On-policy (GKD) sampling.")
    teacher_cache: TeacherCacheConfig = Field(
        default_factory=TeacherCacheConfig, description="data: offline_teacher settings."
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW and its schedule.")
    max_steps: int = Field(100, description="Optimizer steps to train (at least 1).")
    batch_size: int = Field(8, ge=1, description="Sequences per process per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    max_length: int = Field(512, ge=8, description="Longest training sequence, in tokens (longer ones are cut).")
    precision: Literal["bf16", "fp32"] = Field(
        "bf16", description="bf16: autocast matmuls (AMX on CPU) with fp32 master weights; fp32: everything fp32."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    compile_layers: bool | Literal["auto"] = Field(
        "auto",
        description="Compile each decoder layer of the student and the teacher with torch.compile (regional: "
        "one graph serves every layer), fusing the norm, rotary and activation work around the matmuls "
        "(~15% of a CPU step). auto: on for single-process CPU runs with a vocabulary of at least 16k "
        "tokens and a C++ compiler, and off with gradient checkpointing or on-policy sampling; the "
        "first step pays the compilation (seconds to a minute; cached on disk for later runs).",
    )
    packing: bool | Literal["auto"] = Field(
        "auto",
        description="Pack several examples per row of a micro-batch (first-fit, rows of a bucketed width), each "
        "with its own positions so attention stays within it: short sequences do not pad the step, and "
        "compiled layers see a few shapes. The loss is the same sum over the same tokens. auto: on when the "
        "student and the teacher keep packed sequences apart (checked on a tiny input before training).",
    )
    eval_every: int = Field(50, ge=1, description="Evaluate on held-out data every N steps (and at the end).")
    eval_examples: int = Field(64, ge=1, description="Held-out examples used per evaluation.")
    checkpoint_every: int = Field(50, ge=1, description="Save a resumable checkpoint every N steps.")
    memory_check: bool = Field(True, description="Refuse to start when the estimated peak memory exceeds what is free.")
    quant_aware: QuantAwareConfig | None = Field(
        None, description="Quantization-aware distillation: train the student through its int4 / int8 rounding.")

    @model_validator(mode="after")
    def _check(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 (got {self.max_steps})")
        if self.data == "offline_teacher" and self.on_policy.fraction > 0:
            raise ValueError("on_policy.fraction > 0 needs the live teacher; it cannot be used with data: offline_teacher")
        if self.data == "offline_teacher" and self.loss.hidden is not None:
            raise ValueError("loss.hidden needs the live teacher's hidden states; not available with data: offline_teacher")
        if self.loss.cross_tokenizer is not None:
            self._check_cross_tokenizer()
        return self

    def _check_cross_tokenizer(self):
        mode, clash = self.loss.cross_tokenizer, []
        if self.data == "offline_teacher":
            clash.append("data: offline_teacher (the cache holds the teacher's own token ids)")
        if self.on_policy.fraction > 0:
            clash.append("on_policy (the student's samples are not re-tokenized for the teacher)")
        if self.loss.hidden is not None:
            clash.append("loss.hidden (positions of the two models' hidden states are not paired)")
        if self.loss.tokens == "all":
            clash.append("loss.tokens: all (only answer text is aligned: use auto or response)")
        if clash:
            raise ValueError(f"loss.cross_tokenizer: {mode} cannot be combined with " + "; ".join(clash))


def _default_method(value):
    # `- distill: {max_steps: 5}` without a method is logit KD, as it was before score_kd existed
    return {"method": "kd", **value} if isinstance(value, dict) and "method" not in value else value


# the distill stage's config: logit KD of generators, or score KD of ranking / classification scorers
DistillStageConfig = Annotated[
    DistillConfig | ScoreDistillConfig, Field(discriminator="method"), BeforeValidator(_default_method)
]
