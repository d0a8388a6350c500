"""Surgery on tiny random models: removing structure that contributes nothing changes nothing."""

from __future__ import annotations

import pytest
import torch

from slmkit.errors import InputError
from slmkit.prune.surgery import keep_layers, prune_kv_groups, prune_mlp_neurons
from tests.prune_helpers import ARCHS, VOCAB, logits, tiny_model

IDS = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ARCHS)
def test_removing_dead_mlp_neurons_keeps_logits(arch):
    model = tiny_model(arch)
    dead = torch.arange(0, 96, 3)  # every third neuron writes nothing to the residual stream
    for layer in model.model.layers:
        layer.mlp.down_proj.weight.data[:, dead] = 0.0
    before = logits(model, IDS)
    alive = torch.tensor([i for i in range(96) if i % 3])
    prune_mlp_neurons(model, [alive] * 4)
    assert model.config.intermediate_size == 64
    assert torch.allclose(logits(model, IDS), before, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_removing_dead_kv_groups_keeps_logits(arch):
    model = tiny_model(arch)  # 8 query heads in 4 groups of 2, head_dim 16
    for layer in model.model.layers:
        # group 1 = query heads 2, 3 = o_proj input columns 32..63: their output is discarded
        layer.self_attn.o_proj.weight.data[:, 32:64] = 0.0
    before = logits(model, IDS)
    prune_kv_groups(model, [torch.tensor([0, 2, 3])] * 4)
    assert (model.config.num_key_value_heads, model.config.num_attention_heads) == (3, 6)
    assert torch.allclose(logits(model, IDS), before, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_removing_an_identity_layer_keeps_logits(arch):
    model = tiny_model(arch)
    layer = model.model.layers[2]
    layer.self_attn.o_proj.weight.data.zero_()
    layer.mlp.down_proj.weight.data.zero_()
    before = logits(model, IDS)
    keep_layers(model, [0, 1, 3])
    assert torch.allclose(logits(model, IDS), before, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "qwen2"])
def test_depth_pruning_equals_skipping_layers(arch):
    model = tiny_model(arch)
    skipped = {1, 2}
    # reference: the unpruned model with the skipped layers' outputs replaced by their inputs
    hooks = [
        model.model.layers[i].register_forward_hook(
            lambda m, args, kwargs, out: args[0] if args else kwargs["hidden_states"], with_kwargs=True
        )
        for i in skipped
    ]
    reference = logits(model, IDS)
    for h in hooks:
        h.remove()
    full = logits(model, IDS)
    assert not torch.allclose(reference, full, atol=1e-3)  # the skipped layers mattered
    keep_layers(model, [0, 3])
    assert model.config.num_hidden_layers == 2
    if arch == "gemma3_text":
        assert model.config.layer_types == ["sliding_attention", "full_attention"]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    assert torch.allclose(logits(model, IDS), reference, atol=1e-5)


def test_depth_pruned_model_generates_with_kv_cache():
    model = tiny_model("gemma3_text")
    keep_layers(model, [1, 2])
    out = model.generate(IDS[:1, :6], max_new_tokens=5, do_sample=False)
    # greedy decoding with the cache must match recomputing the whole prefix each step
    ids = IDS[:1, :6]
    for _ in range(5):
        ids = torch.cat([ids, logits(model, ids)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, ids)


def test_keep_layers_rejects_bad_indices():
    with pytest.raises(InputError, match="0..3"):
        keep_layers(tiny_model("llama"), [0, 4])
    with pytest.raises(InputError, match="non-empty"):
        keep_layers(tiny_model("llama"), [])


def test_width_surgery_on_an_unknown_layout_is_an_input_error():
    from transformers import AutoModelForCausalLM, GPT2Config

    model = AutoModelForCausalLM.from_config(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64))
    keep_layers(model, [0])  # depth takes any decoder with one layer list
    assert model.config.n_layer == 1 and len(model.transformer.h) == 1
    with pytest.raises(InputError, match="'gpt2' is not supported by width_mlp: .*knows the layouts of llama"):
        prune_mlp_neurons(model, [torch.arange(4)])
