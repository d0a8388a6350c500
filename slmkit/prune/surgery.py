"""Model surgery: cut layers, MLP neurons or key/value groups out of a decoder-only HF model.

Each function edits the model in place and updates its config so that ``save_pretrained``
writes a checkpoint that plain ``AutoModelForCausalLM.from_pretrained`` rebuilds with the new
sizes. Hidden size is never touched, so tied embeddings and rotary tables stay valid.

Depth surgery works on any decoder-only model with one list of decoder layers; width surgery
knows the projection layouts of ``slmkit.prune.archs.LAYOUTS`` (Phi-3's fused ``qkv_proj`` and
``gate_up_proj`` included).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from slmkit.errors import InputError
from slmkit.prune.archs import LAYOUTS, Layout, check_method, kept_layer_config

# where decoder layers live under a model's base model (model.model, transformer, gpt_neox, ...)
_LAYER_LISTS = ("layers", "h", "blocks", "block")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# a logical projection inside a fused one: (fused module, part); parts are stacked along the rows
_FUSED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
          "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


def check_supported(config, method: str = "depth") -> None:
    """Raise InputError naming the model_type and why when ``method`` cannot cut this model."""
    cfg = config if isinstance(config, dict) else config.to_dict()
    check_method(cfg, method)


def _layer_list_owner(model) -> tuple[nn.Module, str]:
    """(module, attribute) holding the decoder layers: one ModuleList of num_hidden_layers entries."""
    base = getattr(model, "base_model", model)  # the decoder under the LM / classification head
    n = model.config.num_hidden_layers
    for owner in (base, getattr(base, "decoder", None)):
        for name in _LAYER_LISTS:
            layers = getattr(owner, name, None) if owner is not None else None
            if isinstance(layers, nn.ModuleList) and len(layers) == n:
                return owner, name
    raise InputError(
        f"prune: model_type {model.config.model_type!r} is not supported: no list of its {n} decoder layers "
        f"under {type(base).__name__} (looked for {', '.join(_LAYER_LISTS)})"
    )


def decoder_layers(model) -> nn.ModuleList:
    owner, name = _layer_list_owner(model)
    return getattr(owner, name)


def keep_layers(model, indices: Sequence[int]):
    """Keep only the decoder layers at ``indices`` (0-based, any order given; kept in model order).

    Used by the prune stage and to initialise a student from a teacher's layers.
    """
    check_supported(model.config, "depth")
    owner, name = _layer_list_owner(model)
    layers = getattr(owner, name)
    n = len(layers)
    chosen = sorted({int(i) for i in indices})
    if not chosen or chosen[0] < 0 or chosen[-1] >= n:
        raise InputError(
            f"keep_layers: indices must be a non-empty subset of 0..{n - 1}, got {list(indices)}"
        )
    changes = kept_layer_config(model.config.to_dict(), chosen, n)
    _check_rebuildable(model, layers, chosen, changes)
    setattr(owner, name, nn.ModuleList([layers[i] for i in chosen]))
    for new_idx, layer in enumerate(getattr(owner, name)):
        _set_layer_idx(layer, new_idx)
    for key, value in changes.items():
        setattr(model.config, key, value)
    return model


def _check_rebuildable(model, layers: nn.ModuleList, chosen: list[int], changes: dict) -> None:
    """InputError unless the cut config rebuilds every kept layer with the shapes it has now.

    ``from_pretrained`` rebuilds the model from config.json alone; a model whose layer kinds
    follow from something the cut shifted would load with mismatched (or silently dropped) weights.
    """
    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    with torch.device("meta"):
        fresh = decoder_layers(type(model)(config))
    for new_idx, old_idx in enumerate(chosen):
        want = {k: tuple(v.shape) for k, v in layers[old_idx].state_dict().items()}
        got = {k: tuple(v.shape) for k, v in fresh[new_idx].state_dict().items()}
        if want != got:
            raise InputError(
                f"prune: model_type {model.config.model_type!r} cannot lose these layers: layer {old_idx} would be "
                f"rebuilt at position {new_idx} with other weights ({sorted(set(want) ^ set(got))[:4] or 'shapes'}); "
                "its config derives each layer's structure from the layer's position"
            )


def _set_layer_idx(layer: nn.Module, idx: int) -> None:
    # the KV cache is indexed by layer_idx: stale indices would collide after a cut
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = idx


def layout_of(model) -> Layout:
    return LAYOUTS[model.config.model_type]


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


def projection(layer: nn.Module, name: str, config) -> tuple[str, nn.Linear, slice | None]:
    """(module attribute, Linear, its rows) of a logical projection such as ``q_proj`` in ``layer``.

    A separate projection is the whole Linear (rows None); in a fused one (Phi-3's ``qkv_proj``,
    ``gate_up_proj``) it is the block of rows that computes it.
    """
    parent = layer.mlp if name in MLP_PROJECTIONS else layer.self_attn
    if hasattr(parent, name):
        return name, getattr(parent, name), None
    fused, part = _FUSED[name]
    linear = getattr(parent, fused)
    bounds = _fused_bounds(fused, linear.out_features, config)
    return fused, linear, slice(*bounds[part])


def _fused_bounds(fused: str, rows: int, config) -> list[tuple[int, int]]:
    if fused == "gate_up_proj":  # Phi3MLP: gate, up = gate_up_proj(x).chunk(2)
        return [(0, rows // 2), (rows // 2, rows)]
    head_dim = head_dim_of(config)
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return [(0, q), (q, q + kv), (q + kv, q + 2 * kv)]


def prune_mlp_neurons(
    model, keep: Sequence[torch.Tensor], down_weights: Sequence[torch.Tensor] | None = None
):
    """Keep MLP intermediate neurons ``keep[l]`` in layer l (same count everywhere).

    ``down_weights[l]`` replaces down_proj's weight (e.g. an OSSCAR refit) when given.
    """
    check_supported(model.config, "width_mlp")
    layers = decoder_layers(model)
    sizes = {len(k) for k in keep}
    if len(keep) != len(layers) or len(sizes) != 1:
        raise ValueError("prune_mlp_neurons needs one equally sized index set per layer")
    for i, layer in enumerate(layers):
        mlp = layer.mlp
        idx = keep[i].to(mlp.down_proj.weight.device).long()
        if hasattr(mlp, "gate_up_proj"):  # gate rows, then up rows: keep neuron j in both halves
            ff = mlp.gate_up_proj.out_features // 2
            mlp.gate_up_proj = slice_linear(mlp.gate_up_proj, out_idx=torch.cat([idx, idx + ff]))
        else:
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
    check_supported(model.config, "width_attention")
    config = model.config
    layers = decoder_layers(model)
    sizes = {len(k) for k in keep}
    if len(keep) != len(layers) or len(sizes) != 1:
        raise ValueError("prune_kv_groups needs one equally sized group set per layer")
    head_dim = head_dim_of(config)
    per_group = config.num_attention_heads // config.num_key_value_heads
    kept = sizes.pop()
    for i, layer in enumerate(layers):
        q_rows, kv_rows = kv_group_head_indices(keep[i].cpu().long(), per_group, head_dim)
        _cut_attention(layer.self_attn, q_rows, kv_rows, config, layout_of(model))
        _set_head_counts(layer.self_attn, kept * per_group, kept)
    # head_dim must be written explicitly: Llama derives it from hidden/heads when absent
    config.head_dim = head_dim
    config.num_key_value_heads = kept
    config.num_attention_heads = kept * per_group
    return model


def _cut_attention(attn: nn.Module, q_rows, kv_rows, config, layout: Layout) -> None:
    dev = attn.o_proj.weight.device
    if layout.fused:  # q, k and v rows stacked: offset the k and v rows past the blocks before them
        q, kv = config.num_attention_heads * head_dim_of(config), config.num_key_value_heads * head_dim_of(config)
        rows = torch.cat([q_rows, q + kv_rows, q + kv + kv_rows])
        attn.qkv_proj = slice_linear(attn.qkv_proj, out_idx=rows.to(dev))
    else:
        attn.q_proj = slice_linear(attn.q_proj, out_idx=q_rows.to(dev))
        attn.k_proj = slice_linear(attn.k_proj, out_idx=kv_rows.to(dev))
        attn.v_proj = slice_linear(attn.v_proj, out_idx=kv_rows.to(dev))
    attn.o_proj = slice_linear(attn.o_proj, in_idx=q_rows.to(dev))
    if layout.qk_norm == "width":  # one norm weight per projection row: keep the kept heads' rows
        for norm, rows in ((attn.q_norm, q_rows), (attn.k_norm, kv_rows)):
            norm.weight = nn.Parameter(norm.weight.data[rows.to(norm.weight.device)].clone())


def _set_head_counts(attn: nn.Module, heads: int, kv_heads: int) -> None:
    # some attention modules cache their head counts (Phi-3 splits qkv with num_key_value_heads)
    for name, value in (("num_heads", heads), ("num_attention_heads", heads), ("num_key_value_heads", kv_heads)):
        if isinstance(getattr(attn, name, None), int):
            setattr(attn, name, value)


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
