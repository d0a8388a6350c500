"""Which architectures each prune method can cut, decided from config.json alone (no torch).

Depth pruning removes whole decoder layers: any decoder-only model whose layers sit in one list
takes it, as long as no layer's structure is derived from its position (a cut would shift it).
Width methods and sparsity edit projections by name, so they take the families whose layouts
are listed in ``LAYOUTS``. Recipe validation, ``plan`` and the stage all ask ``method_problem``.
"""

from __future__ import annotations

from dataclasses import dataclass

from slmkit.errors import InputError


@dataclass(frozen=True)
class Layout:
    """What a decoder layer holds besides the Llama projections, for surgery and exact counts."""

    fused: bool = False  # q/k/v rows stacked in qkv_proj, gate/up rows in gate_up_proj (Phi-3)
    norms: int = 2  # norms per decoder layer
    norm_bias: bool = False  # LayerNorm with a bias (StableLM) instead of RMSNorm
    qk_norm: str | None = None  # "head": over head_dim (shared by heads); "width": over the whole projection
    qkv_bias: str | None = "attention_bias"  # config flag of q/k/v biases; "always"; None: never
    o_bias: str | None = "attention_bias"  # config flag of the o_proj bias; None: never
    reads_head_dim: bool = True  # the model reads config.head_dim (False: hidden / heads, fixed width)


LAYOUTS: dict[str, Layout] = {
    "llama": Layout(),  # SmolLM2, Llama 2/3
    "mistral": Layout(),
    "granite": Layout(),  # embedding/residual/attention/logits multipliers live in the config, untouched
    "gemma": Layout(),
    "qwen2": Layout(qkv_bias="always", o_bias=None),
    "qwen3": Layout(qk_norm="head"),
    "gemma2": Layout(norms=4),
    "gemma3_text": Layout(norms=4, qk_norm="head"),
    # OLMo-2 normalises q and k over the full projection width, so its norms shrink with the heads
    "olmo2": Layout(qk_norm="width"),
    "phi3": Layout(fused=True, qkv_bias=None, o_bias=None),
    # StableLM: LayerNorms with biases, partial rotary; head_dim is hidden / heads, so heads cannot go
    "stablelm": Layout(norm_bias=True, qkv_bias="use_qkv_bias", o_bias=None, reads_head_dim=False),
}

WIDTH_METHODS = ("width_mlp", "width_attention", "osscar", "sparsity")

# bidirectional encoders: transformers can build some as causal LMs, but they are not decoders
_ENCODERS = frozenset({
    "albert", "bert", "big_bird", "camembert", "convbert", "data2vec-text", "deberta", "deberta-v2",
    "distilbert", "electra", "ernie", "esm", "funnel", "longformer", "megatron-bert", "mobilebert",
    "modernbert", "mpnet", "nomic_bert", "roberta", "roformer", "squeezebert", "xlm-roberta",
    "xlm-roberta-xl",
})

# config keys that make a layer's kind depend on its index: removing layers would shift the pattern
_POSITIONAL = {
    "decoder_sparse_step": lambda v: v not in (None, 0, 1),  # Qwen MoE: every k-th layer is sparse
    "first_k_dense_replace": bool,  # DeepSeek: the first k layers are dense
    "moe_layer_freq": lambda v: v not in (None, 0, 1),
    "interleave_moe_layer_step": lambda v: v not in (None, 0, 1),  # Llama 4
    "attn_layer_period": bool,  # Jamba: attention every n-th layer, mamba elsewhere
    "expert_layer_period": bool,
}


def depth_problem(cfg: dict) -> str | None:
    """Why whole decoder layers cannot be removed from a model with config ``cfg``, or None."""
    if cfg.get("is_encoder_decoder"):
        return "it is an encoder-decoder model; depth pruning cuts the layer list of a decoder-only model"
    if cfg.get("model_type") in _ENCODERS:
        return "it is an encoder (bidirectional attention), not a decoder-only language model"
    if isinstance(cfg.get("text_config"), dict):
        return ("it is a multimodal checkpoint whose language model's config is nested under text_config; "
                "prune a text-only checkpoint of it (for Gemma 3: model_type gemma3_text)")
    for key, positional in _POSITIONAL.items():
        if positional(cfg.get(key)):
            return (f"its config derives each layer's kind from the layer's position ({key}={cfg[key]}), "
                    "which removing layers would shift")
    return None


def width_problem(cfg: dict, method: str) -> str | None:
    """Why ``method`` (a width method or sparsity) cannot edit this model's projections, or None."""
    layout = LAYOUTS.get(cfg.get("model_type"))
    if layout is None:
        return (f"{method} edits projections by name and knows the layouts of {', '.join(LAYOUTS)}; "
                "depth pruning works on any decoder-only model")
    if method == "width_attention" and not layout.reads_head_dim:
        return ("it derives head_dim from hidden_size / num_attention_heads, so removing heads would change the "
                "width of every remaining head; depth, width_mlp, osscar and sparsity apply")
    return None


def method_problem(cfg: dict, method: str) -> str | None:
    """Why prune ``method`` cannot run on a model with config ``cfg`` (a config.json dict), or None."""
    problem = depth_problem(cfg)
    if problem is None and method in WIDTH_METHODS:
        problem = width_problem(cfg, method)
    return problem


def check_method(cfg: dict, method: str) -> None:
    """InputError naming the model_type and the reason when ``method`` cannot cut this model."""
    problem = method_problem(cfg, method)
    if problem is not None:
        raise InputError(f"prune: model_type {cfg.get('model_type')!r} is not supported by {method}: {problem}")


# lists that may happen to have num_hidden_layers entries without being per-layer settings
_NOT_PER_LAYER = frozenset({
    "architectures", "bos_token_id", "eos_token_id", "pad_token_id", "bad_words_ids", "suppress_tokens",
    "begin_suppress_tokens", "forced_decoder_ids",
})


def kept_layer_config(cfg: dict, kept: list[int], total: int) -> dict:
    """The config entries that change when only layers ``kept`` (sorted) of ``total`` remain.

    Every top-level list with one entry per layer (``layer_types`` of Gemma 2/3, Qwen 2/3 and OLMo 3,
    ``no_rope_layers``, ...) keeps the entries of the kept layers; lists of layer indices
    (``mlp_only_layers``) are renumbered; ``max_window_layers`` (layers below it use full attention)
    counts the kept layers below it.
    """
    changes: dict = {"num_hidden_layers": len(kept)}
    position = {old: new for new, old in enumerate(kept)}
    for key, value in cfg.items():
        if key in _NOT_PER_LAYER or not isinstance(value, (list, tuple)):
            continue
        if key == "mlp_only_layers":
            changes[key] = [position[i] for i in value if i in position]
        elif len(value) == total:
            changes[key] = [value[i] for i in kept]
    if isinstance(cfg.get("max_window_layers"), int):
        changes["max_window_layers"] = sum(1 for i in kept if i < cfg["max_window_layers"])
    return changes
