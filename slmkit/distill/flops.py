"""Model FLOPs of a decoder forward pass: what a step must compute, for utilization figures.

Per sequence of ``T`` tokens with ``r`` rows through the lm_head::

    2 * P_linear * T  +  2 * L * A * T * (T + 1)  +  2 * V * H * r

``P_linear`` is the weight count of the decoder layers' linear maps (attention projections and
MLP; no embedding, norms or biases), ``L`` the layers, ``A`` the query width (heads x head_dim):
causal attention multiplies T (T + 1) / 2 query-key pairs for QK^T and as many for AV, 2 FLOPs
per multiply-add. ``V x H`` is the lm_head. A training step of the student is three forward passes
(forward, and backward for activations and weights); the frozen teacher is one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    linear_params: int
    layers: int
    attn_width: int
    head_params: int


def model_shape(model) -> ModelShape:
    """Read the numbers of the formula off a causal LM (any architecture with nn.Linear layers)."""
    from torch import nn

    head = model.get_output_embeddings()
    decoder = model.base_model
    linear = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, nn.Linear))
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return ModelShape(linear, cfg.num_hidden_layers, heads * head_dim, head.weight.numel())


def forward_flops(shape: ModelShape, seq_len: int, head_rows: int) -> float:
    t = seq_len
    return 2.0 * shape.linear_params * t + 2.0 * shape.layers * shape.attn_width * t * (t + 1) \
        + 2.0 * shape.head_params * head_rows


def step_flops(student: ModelShape, teacher: ModelShape | None, lengths: list[int], rows: list[int]) -> float:
    """A distillation step over sequences of ``lengths``: student forward + backward, teacher forward."""
    total = 0.0
    for t, r in zip(lengths, rows):
        total += 3 * forward_flops(student, t, r) + (forward_flops(teacher, t, r) if teacher else 0.0)
    return total


def teacher_flops_avoided(teacher: ModelShape, examples, *, steps: int, global_batch: int, seed: int) -> float:
    """Teacher forward FLOPs that ``steps`` optimizer steps over ``examples`` would have run live."""
    from slmkit.distill.trainer import batch_indices

    per = [forward_flops(teacher, len(e.input_ids), sum(e.loss_mask[1:])) for e in examples]
    return float(sum(per[i] for s in range(steps) for i in batch_indices(len(examples), global_batch, s, seed)))
