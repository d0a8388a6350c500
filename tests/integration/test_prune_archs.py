"""Every method on every architecture it takes: prune, save, reload with plain transformers."""

from __future__ import annotations

import io

import pytest
import torch
from pydantic import TypeAdapter
from transformers import AutoModelForCausalLM

from slmkit.errors import InputError
from slmkit.models import config_params, save_model
from slmkit.progress import Reporter
from slmkit.prune import PruneConfig
from slmkit.prune.archs import check_method, method_problem
from slmkit.prune.budget import param_count, resized
from slmkit.prune.stage import prune_model
from slmkit.prune.surgery import keep_layers, prune_kv_groups, prune_mlp_neurons
from tests.prune_helpers import ARCHS, MORE_ARCHS, VOCAB, logits, random_examples, tiny_config, tiny_model

SMALL = {"calibration_samples": 8, "batch_size": 4}
METHODS = {
    "depth": {"method": "depth", "keep_layers": 2},
    "width_mlp": {"method": "width_mlp", "keep_ratio": 0.5},
    "width_attention": {"method": "width_attention", "keep_kv_groups": 2},
    "osscar": {"method": "osscar", "keep_neurons": 48, "max_swaps": 8},
    "sparsity": {"method": "sparsity", "pattern": "2:4"},
}
EXPECTED = {  # config key -> value after pruning the 4-layer, ff 96, 4-group tiny model
    "depth": ("num_hidden_layers", 2),
    "width_mlp": ("intermediate_size", 48),
    "width_attention": ("num_key_value_heads", 2),
    "osscar": ("intermediate_size", 48),
    "sparsity": ("intermediate_size", 96),
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("arch", ARCHS)
def test_prune_save_reload_same_logits(arch, method, tmp_path):
    model = tiny_model(arch)
    cfg = TypeAdapter(PruneConfig).validate_python({**METHODS[method], **SMALL})
    result = prune_model(model, cfg, random_examples(8), [], 0, reporter=Reporter(io.StringIO()))
    save_model(model, None, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # plain transformers, no slmkit code
    key, value = EXPECTED[method]
    assert getattr(reloaded.config, key) == value
    assert sum(p.numel() for p in reloaded.parameters()) == result.metrics["params_after"]["total"]
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(logits(reloaded, ids), logits(model, ids), atol=1e-5)
    out = reloaded.generate(ids[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 16)
    if reloaded.config.tie_word_embeddings:
        assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()


# --- families beyond Llama's layout: fused projections (Phi-3), LayerNorm with biases and
# per-head q/k norms (StableLM), multipliers (Granite), full-width q/k norms (OLMo-2), Gemma 1

IDS = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))


def _prune(model, method: str):
    cfg = TypeAdapter(PruneConfig).validate_python({**METHODS[method], **SMALL})
    return prune_model(model, cfg, random_examples(8), [], 0, reporter=Reporter(io.StringIO()))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("arch", MORE_ARCHS)
def test_more_families_prune_save_reload_same_logits(arch, method, tmp_path):
    model = tiny_model(arch)
    if (arch, method) == ("stablelm", "width_attention"):
        with pytest.raises(InputError, match="'stablelm' is not supported by width_attention: it derives head_dim"):
            _prune(model, method)
        return
    result = _prune(model, method)
    save_model(model, None, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    key, value = EXPECTED[method]
    assert getattr(reloaded.config, key) == value
    assert sum(p.numel() for p in reloaded.parameters()) == result.metrics["params_after"]["total"]
    assert torch.allclose(logits(reloaded, IDS), logits(model, IDS), atol=1e-5)
    out = reloaded.generate(IDS[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 16)


@pytest.mark.parametrize("arch", MORE_ARCHS)
def test_more_families_count_parameters_exactly(arch):
    variants = [{}, {"attention_bias": True}] if arch in ("granite", "olmo2", "gemma") else [{}]
    variants += [{"use_parallel_residual": True, "qk_layernorm": False}] if arch == "stablelm" else []
    for extra in variants:
        config = tiny_config(arch, **extra)
        assert param_count(config)["total"] == config_params(config), extra
        dims = (("layers", 2), ("mlp_neurons", 40)) + ((("kv_groups", 2),) if arch != "stablelm" else ())
        for dim, keep in dims:
            after = resized(config.to_dict(), dim, keep)
            assert param_count(after)["total"] == config_params(type(config)(**after)), (extra, dim)


def test_phi3_fused_cuts_equal_removing_dead_structure():
    model = tiny_model("phi3")  # 8 query heads in 4 kv groups, head_dim 16, 96 MLP neurons
    for layer in model.model.layers:
        layer.mlp.down_proj.weight.data[:, ::3] = 0.0  # every third neuron writes nothing
        layer.self_attn.o_proj.weight.data[:, 32:64] = 0.0  # query heads 2, 3 (group 1) are discarded
    before = logits(model, IDS)
    prune_mlp_neurons(model, [torch.tensor([i for i in range(96) if i % 3])] * 4)
    prune_kv_groups(model, [torch.tensor([0, 2, 3])] * 4)
    attn = model.model.layers[0].self_attn
    assert attn.qkv_proj.out_features == (6 + 2 * 3) * 16 and attn.num_key_value_heads == 3
    assert model.model.layers[0].mlp.gate_up_proj.out_features == 2 * 64
    assert torch.allclose(logits(model, IDS), before, atol=1e-5)


def test_phi3_sparsity_works_on_each_part_of_a_fused_projection():
    model = tiny_model("phi3")
    cfg = TypeAdapter(PruneConfig).validate_python({"method": "sparsity", "sparsity": 0.5, "modules": ["k_proj"], **SMALL})
    prune_model(model, cfg, random_examples(8), [], 0, reporter=Reporter(io.StringIO()))
    w = model.model.layers[0].self_attn.qkv_proj.weight
    q, kv = 8 * 16, 4 * 16
    assert (w[q : q + kv] == 0).float().mean() == 0.5  # the k rows, half of each row zeroed
    assert (w[:q] != 0).all() and (w[q + kv :] != 0).all()  # q and v untouched


def test_olmo2_full_width_qk_norms_keep_the_kept_heads_rows():
    model = tiny_model("olmo2")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.copy_(torch.arange(128.0))
            layer.self_attn.k_norm.weight.copy_(torch.arange(64.0))
    prune_kv_groups(model, [torch.tensor([1, 3])] * 4)
    attn = model.model.layers[0].self_attn
    assert attn.q_norm.weight.tolist() == [*range(32, 64), *range(96, 128)]  # query heads 2-3 and 6-7
    assert attn.k_norm.weight.tolist() == [*range(16, 32), *range(48, 64)]


def test_granite_multipliers_survive_pruning(tmp_path):
    model = tiny_model("granite")
    _prune(model, "width_attention")
    save_model(model, None, tmp_path)
    config = AutoModelForCausalLM.from_pretrained(tmp_path).config
    assert (config.embedding_multiplier, config.residual_multiplier, config.attention_multiplier,
            config.logits_scaling) == (12.0, 0.22, 0.0625, 8.0)


@pytest.mark.parametrize("arch", MORE_ARCHS)
def test_depth_pruning_equals_skipping_layers_in_more_families(arch):
    model = tiny_model(arch)
    hooks = [model.model.layers[i].register_forward_hook(
        lambda m, args, kwargs, out: args[0] if args else kwargs["hidden_states"], with_kwargs=True)
        for i in (1, 2)]
    reference = logits(model, IDS)
    for h in hooks:
        h.remove()
    keep_layers(model, [0, 3])
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    assert torch.allclose(logits(model, IDS), reference, atol=1e-5)


# --- depth on any decoder-only model with one layer list

ANY_DECODER = {  # model_type -> config overrides (tiny sizes are added below)
    "gpt2": {"n_embd": 64, "n_head": 4, "n_layer": 4, "n_positions": 64},
    "gpt_neox": {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 4, "intermediate_size": 96},
    "cohere": {}, "starcoder2": {},
    "olmo3": {"layer_types": ["sliding_attention", "full_attention"] * 2, "sliding_window": 4},
    "smollm3": {"no_rope_layers": [1, 1, 1, 0]},
    "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 32, "mlp_only_layers": [1, 2]},
}


def _any_decoder(model_type: str):
    from transformers import AutoConfig

    overrides = ANY_DECODER[model_type]
    base = {} if model_type in ("gpt2", "gpt_neox") else {
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64}
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                  **base, **overrides)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", list(ANY_DECODER))
def test_depth_pruning_works_on_any_decoder_with_a_layer_list(model_type, tmp_path):
    model = _any_decoder(model_type)
    config_before = model.config.to_dict()
    result = _prune(model, "depth")
    kept = result.details["kept_layers"]
    save_model(model, None, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 2
    for key in ("layer_types", "no_rope_layers"):  # per-layer lists follow their layers
        if key in config_before:
            assert getattr(reloaded.config, key) == [config_before[key][i] for i in kept]
    if model_type == "qwen2_moe":  # layer indices are renumbered
        assert reloaded.config.mlp_only_layers == [new for new, old in enumerate(kept) if old in (1, 2)]
    assert sum(p.numel() for p in reloaded.parameters()) == result.metrics["params_after"]["total"]
    assert torch.allclose(logits(reloaded, IDS), logits(model, IDS), atol=1e-5)
    # greedy decoding through the KV cache must match recomputing the prefix: layer_idx was renumbered
    out = reloaded.generate(IDS[:1, :6], max_new_tokens=4, do_sample=False, pad_token_id=0)
    ids = IDS[:1, :6]
    for _ in range(4):
        ids = torch.cat([ids, logits(reloaded, ids)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)


@pytest.mark.parametrize("config,match", [
    ({"model_type": "qwen2_moe", "decoder_sparse_step": 2}, "derives each layer's kind from the layer's position"),
    ({"model_type": "deepseek_v3", "first_k_dense_replace": 1}, "first_k_dense_replace=1"),
    ({"model_type": "bert"}, "an encoder"),
    ({"model_type": "t5", "is_encoder_decoder": True}, "encoder-decoder"),
    ({"model_type": "gemma3", "text_config": {"model_type": "gemma3_text"}}, "nested under text_config"),
])
def test_depth_refuses_what_cannot_be_cut(config, match):
    with pytest.raises(InputError, match=f"model_type '{config['model_type']}' is not supported by depth: .*{match}"):
        check_method(config, "depth")


def test_width_methods_name_the_families_they_know():
    assert method_problem({"model_type": "gpt2"}, "depth") is None
    with pytest.raises(InputError, match="'gpt2' is not supported by width_mlp: .*knows the layouts of llama"):
        check_method({"model_type": "gpt2"}, "width_mlp")


def test_a_cut_that_would_rebuild_other_layers_is_refused():
    from slmkit.prune.surgery import _check_rebuildable, decoder_layers

    model = _any_decoder("qwen2_moe")
    model.config.decoder_sparse_step, model.config.mlp_only_layers = 2, []
    model = AutoModelForCausalLM.from_config(model.config)  # layers 1 and 3 sparse, 0 and 2 dense
    with pytest.raises(InputError, match="layer 1 would be rebuilt at position 0"):
        _check_rebuildable(model, decoder_layers(model), [1, 2], {"num_hidden_layers": 2})
