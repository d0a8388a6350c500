"""Pure parts of the distill trainer: schedule, data order, target selection."""

import math

import pytest
import torch

from slmkit.distill.trainer import (
    batch_indices,
    compile_decoder_layers,
    lr_factor,
    select_targets,
    uncompile,
    use_compile,
    use_layer_compile,
)


def test_lr_warmup_then_cosine_to_min_ratio():
    f = [lr_factor(s, warmup=2, total=10, min_ratio=0.1) for s in range(11)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[2:], f[3:]))


def test_batch_indices_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    n, g = 10, 4
    stream = [i for s in range(5) for i in batch_indices(n, g, s, seed=3)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert batch_indices(n, g, 2, seed=3) == stream[8:12]  # random access: what a resume needs
    assert batch_indices(n, g, 2, seed=4) != stream[8:12]


def test_select_targets_uses_next_token_mask_and_skips_padding():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])
    sel, tgt = select_targets(ids, mask)
    assert sel.tolist() == [1, 2, 4]  # row-major flat positions predicting a counted token
    assert tgt.tolist() == [7, 8, 10]


def test_compile_auto_stays_off_for_tiny_vocabularies_and_explicit_settings_win():
    cpu = torch.device("cpu")
    assert use_compile("auto", 256, cpu) is False  # test models: no compile time
    assert use_compile(False, 49152, cpu) is False
    assert use_compile(True, 256, cpu) is True


def test_layer_compile_auto_only_for_single_process_cpu_runs_without_sampling_or_checkpointing():
    from slmkit.distill.config import DistillConfig

    cpu, big = torch.device("cpu"), 49152
    has_cxx = use_compile("auto", big, cpu)  # a C++ compiler is what auto needs on CPU
    assert use_layer_compile(DistillConfig(), big, cpu, 1) is has_cxx
    assert use_layer_compile(DistillConfig(), 256, cpu, 1) is False  # test models stay eager
    assert use_layer_compile(DistillConfig(), big, cpu, 2) is False
    assert use_layer_compile(DistillConfig(), big, torch.device("cuda"), 1) is False
    assert use_layer_compile(DistillConfig(gradient_checkpointing=True), big, cpu, 1) is False
    assert use_layer_compile(DistillConfig(on_policy={"fraction": 0.5}), big, cpu, 1) is False
    assert use_layer_compile(DistillConfig(compile_layers=True), 256, cpu, 4) is True
    assert use_layer_compile(DistillConfig(compile_layers=False), big, cpu, 1) is False


def test_compiled_decoder_layers_match_eager_keep_state_dict_keys_and_uncompile(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).train()
    keys = list(model.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = model(input_ids=ids).logits.float()
    layers = compile_decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers
    assert all(m._compiled_call_impl is not None for m in layers)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids).logits.float()
    out.sum().backward()  # gradients flow through the compiled layers
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None
    assert list(model.state_dict()) == keys  # saving writes the same names
    # eager rounding emulated: the same numbers as eager autocast (0.0 apart when written)
    assert torch.allclose(out, eager, atol=1e-3, rtol=0), (out - eager).abs().max()
    uncompile(layers)
    assert all(m._compiled_call_impl is None for m in layers)
