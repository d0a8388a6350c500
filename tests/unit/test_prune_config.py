"""Prune configs, the parameter budget and the dry-run plan, checked against real model counts."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from transformers import AutoModelForCausalLM

from slmkit.errors import InputError
from slmkit.prune import PruneConfig, plan
from slmkit.prune.budget import param_count, resized, solve_keep
from slmkit.prune.config import parse_param_count
from tests.prune_helpers import ARCHS, tiny_config

ADAPTER = TypeAdapter(PruneConfig)


def _real_count(config) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


@pytest.mark.parametrize(
    "text,value", [("70M", 70_000_000), ("1.5B", 1_500_000_000), ("500k", 500_000), (1234, 1234)]
)
def test_parse_param_count(text, value):
    assert parse_param_count(text) == value


def test_configs_validate_by_method():
    cfg = ADAPTER.validate_python({"method": "osscar", "target_params": "70M"})
    assert type(cfg).__name__ == "OsscarConfig" and cfg.target_params == 70_000_000
    assert ADAPTER.validate_python({"method": "sparsity", "pattern": "2:4"}).pattern == "2:4"


@pytest.mark.parametrize(
    "body",
    [
        {"method": "depth"},
        {"method": "depth", "keep_layers": 2, "remove_layers": 1},
        {"method": "width_mlp", "keep_ratio": 1.5},
        {"method": "sparsity", "pattern": "4:2"},
        {"method": "sparsity", "sparsity": 0.5, "pattern": "2:4"},
        {"method": "width_attention", "keep_kv_groups": 1, "typo": 1},
        {"method": "osscar", "target_params": "lots"},
        {"method": "magic", "keep_ratio": 0.5},
    ],
)
def test_bad_configs_are_rejected(body):
    with pytest.raises(ValidationError):
        ADAPTER.validate_python(body)


def test_every_field_has_a_description():
    from slmkit.prune import config as c

    for cls in (c.DepthConfig, c.WidthMlpConfig, c.WidthAttentionConfig, c.OsscarConfig, c.SparsityConfig):
        missing = [n for n, f in cls.model_fields.items() if not f.description]
        assert not missing, f"{cls.__name__}: {missing}"


@pytest.mark.parametrize("arch", ARCHS)
def test_param_count_matches_real_model(arch):
    config = tiny_config(arch, attention_bias=arch != "mistral", tie_word_embeddings=arch.startswith("gemma"))
    counts = param_count(config)
    assert counts["total"] == _real_count(config)
    for dim, keep in (("layers", 2), ("mlp_neurons", 40), ("kv_groups", 2)):
        after = resized(config.to_dict(), dim, keep)
        assert param_count(after)["total"] == _real_count(type(config)(**after)), (dim, keep)


def test_solve_keep_lands_within_two_percent():
    config = tiny_config("llama", intermediate_size=512)
    full = param_count(config)["total"]
    target = int(full * 0.8)
    keep = solve_keep(config, "mlp_neurons", target)
    got = param_count(resized(config.to_dict(), "mlp_neurons", keep))["total"]
    assert abs(got - target) <= 0.02 * target
    assert solve_keep(config, "mlp_neurons", target, multiple_of=16) % 16 == 0


def test_unreachable_target_is_an_input_error():
    config = tiny_config("llama")
    with pytest.raises(InputError, match="unreachable.*mlp_neurons"):
        solve_keep(config, "mlp_neurons", 1000)
    with pytest.raises(InputError, match="unreachable"):
        solve_keep(config, "layers", param_count(config)["total"] * 2)


def test_plan_reports_sizes_without_weights():
    config = tiny_config("qwen3")
    result = plan(ADAPTER.validate_python({"method": "width_attention", "keep_kv_groups": 2}), config)
    assert result["config_after"]["num_key_value_heads"] == 2
    assert result["config_after"]["num_attention_heads"] == 4
    assert result["params"] == _real_count(result["model_config"]) < param_count(config)["total"]
    depth = plan(ADAPTER.validate_python({"method": "depth", "remove_layers": 1}), config.to_dict())
    assert depth["config_after"]["num_hidden_layers"] == 3 and isinstance(depth["model_config"], dict)


@pytest.mark.parametrize(
    "body,match",
    [
        ({"method": "depth", "keep_layers": 9}, "has 4 layers"),
        ({"method": "depth", "remove_layers": 4}, "at least 1 must remain"),
        ({"method": "depth", "layers": [0, 7]}, "0..3"),
        ({"method": "width_mlp", "keep_neurons": 1000}, "intermediate_size is 96"),
        ({"method": "width_attention", "keep_kv_groups": 5}, "num_key_value_heads=4"),
        ({"method": "sparsity", "pattern": "2:5"}, "not multiples of 5"),
    ],
)
def test_plan_rejects_targets_the_model_cannot_meet(body, match):
    with pytest.raises(InputError, match=match):
        plan(ADAPTER.validate_python(body), tiny_config("llama"))


def test_unsupported_architecture_lists_the_supported_ones():
    with pytest.raises(InputError, match="'gpt2' is not supported by width_mlp: .*layouts of llama, mistral"):
        plan(ADAPTER.validate_python({"method": "width_mlp", "keep_ratio": 0.5}), {"model_type": "gpt2"})
    with pytest.raises(InputError, match="'bert' is not supported by depth: it is an encoder"):
        plan(ADAPTER.validate_python({"method": "depth", "keep_layers": 1}), {"model_type": "bert"})
