"""Model surgery: cut layers, MLP neurons or key/value groups out of a decoder-only HF model.

Each function edits the model in place and updates its config so that ``save_pretrained``
writes a checkpoint that plain ``AutoModelForCausalLM.from_pretrained`` rebuilds with the new
sizes. Hidden size is never touched, so tied embeddings and rotary tables stay valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slmkit.errors import InputError

# model_type -> decoder layer layout; all share model.model.layers / self_attn / mlp naming.
# Gemma 3 multimodal checkpoints ("gemma3") nest the text model and are not handled here.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")


def check_supported(config) -> None:
    """Raise InputError naming the supported architectures when ``config`` is not one of them."""
    model_type = getattr(config, "model_type", None) or (
        config.get("model_type") if isinstance(config, dict) else None
    )
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise InputError(
            f"prune: model_type {model_type!r} is not supported; supported architectures: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)}"
        )


def decoder_layers(model) -> nn.ModuleList:
    return model.model.layers


def keep_layers(model, indices: Sequence[int]):
    """Keep only the decoder layers at ``indices`` (0-based, any order given; kept in model order).

    Used by the prune stage and to initialise a student from a teacher's layers.
    """
    check_supported(model.config)
    layers = decoder_layers(model)
    n = len(layers)
    chosen = sorted({int(i) for i in indices})
    if not chosen or chosen[0] < 0 or chosen[-1] >= n:
        raise InputError(
            f"keep_layers: indices must be a non-empty subset of 0..{n - 1}, got {list(indices)}"
        )
    model.model.layers = nn.ModuleList([layers[i] for i in chosen])
    for new_idx, layer in enumerate(model.model.layers):
        _set_layer_idx(layer, new_idx)
    config = model.config
    # layer_types drives per-layer attention (sliding/full) and the KV cache layout: slice it too
    if getattr(config, "layer_types", None) is not None:
        types = [config.layer_types[i] for i in chosen]
        config.num_hidden_layers = len(chosen)
        config.layer_types = types
    else:
        config.num_hidden_layers = len(chosen)
    if getattr(config, "max_window_layers", None) is not None:
        config.max_window_layers = min(config.max_window_layers, len(chosen))
    return model


def _set_layer_idx(layer: nn.Module, idx: int) -> None:
    # the KV cache is indexed by layer_idx: stale indices would collide after a cut
    for module in (layer, layer.self_attn):
        if hasattr(module, "layer_idx"):
            module.layer_idx = idx


def slice_linear(
    linear: nn.Linear, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None
) -> nn.Linear:
    """A new Linear with only the given output rows and/or input columns of ``linear``."""
    weight = linear.weight.data
    if out_idx is not None:
        weight = weight[out_idx]
    if in_idx is not None:
        weight = weight[:, in_idx]
    bias = linear.bias
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    new.weight.data.copy_(weight)
    if bias is not None:
        # a bias belongs to the output rows; input slicing leaves it as is
        new.bias.data.copy_(bias.data if out_idx is None else bias.data[out_idx])
    return new


def prune_mlp_neurons(
    model, keep: Sequence[torch.Tensor], down_weights: Sequence[torch.Tensor] | None = None
):
    """Keep MLP intermediate neurons ``keep[l]`` in layer l (same count everywhere).

    ``down_weights[l]`` replaces down_proj's weight (e.g. an OSSCAR refit) when given.
    """
    layers = decoder_layers(model)
    sizes = {len(k) for k in keep}
    if len(keep) != len(layers) or len(sizes) != 1:
        raise ValueError("prune_mlp_neurons needs one equally sized index set per layer")
    for i, layer in enumerate(layers):
        mlp = layer.mlp
        idx = keep[i].to(mlp.gate_proj.weight.device)
        mlp.gate_proj = slice_linear(mlp.gate_proj, out_idx=idx)
        mlp.up_proj = slice_linear(mlp.up_proj, out_idx=idx)
        mlp.down_proj = slice_linear(mlp.down_proj, in_idx=idx)
        if down_weights is not None:
            mlp.down_proj.weight.data.copy_(down_weights[i].to(mlp.down_proj.weight.dtype))
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = len(idx)
    model.config.intermediate_size = sizes.pop()
    return model


def kv_group_head_indices(
    groups: torch.Tensor, heads_per_group: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of q_proj and of k/v_proj that belong to the kept key/value ``groups``.

    GQA repeats each kv head for ``heads_per_group`` consecutive query heads (repeat_kv), so
    query heads g*hpg .. (g+1)*hpg-1 read group g.
    """
    q_heads = (groups.unsqueeze(1) * heads_per_group + torch.arange(heads_per_group)).reshape(-1)
    q_rows = (q_heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)
    kv_rows = (groups.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)
    return q_rows, kv_rows


def prune_kv_groups(model, keep: Sequence[torch.Tensor]):
    """Keep key/value groups ``keep[l]`` (with their query heads) in layer l (same count everywhere)."""
    config = model.config
    layers = decoder_layers(model)
    sizes = {len(k) for k in keep}
    if len(keep) != len(layers) or len(sizes) != 1:
        raise ValueError("prune_kv_groups needs one equally sized group set per layer")
    head_dim = head_dim_of(config)
    per_group = config.num_attention_heads // config.num_key_value_heads
    for i, layer in enumerate(layers):
        attn = layer.self_attn
        q_rows, kv_rows = kv_group_head_indices(keep[i].cpu().long(), per_group, head_dim)
        attn.q_proj = slice_linear(attn.q_proj, out_idx=q_rows.to(attn.q_proj.weight.device))
        attn.k_proj = slice_linear(attn.k_proj, out_idx=kv_rows.to(attn.k_proj.weight.device))
        attn.v_proj = slice_linear(attn.v_proj, out_idx=kv_rows.to(attn.v_proj.weight.device))
        attn.o_proj = slice_linear(attn.o_proj, in_idx=q_rows.to(attn.o_proj.weight.device))
    kept = sizes.pop()
    # head_dim must be written explicitly: Llama derives it from hidden/heads when absent
    config.head_dim = head_dim
    config.num_key_value_heads = kept
    config.num_attention_heads = kept * per_group
    return model


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
