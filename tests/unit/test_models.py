"""Model refs: local directories of several architectures, the built-in GGUF, saved files with 4.x keys."""

from __future__ import annotations

import json

import pytest
import torch

from slmkit.errors import InputError
from slmkit.models import builtin_path, config_params, count_params, load_config, load_ref, resolve_ref
from tests.conftest import make_tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_local_dir_round_trip(tmp_path, smollm2_tokenizer_dir, arch):
    src = make_tiny_model(tmp_path / arch, smollm2_tokenizer_dir, arch)
    model, tok = load_ref(str(src))
    assert model.config.model_type == arch and tok.pad_token is not None
    ids = torch.tensor([tok("hello world")["input_ids"]])
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(src).eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    assert count_params(model) == config_params(model.config)


def test_saved_files_carry_the_keys_transformers_4_reads(tiny_llama_dir):
    # loading them in transformers 4.57 itself: tests/integration/test_transformers_457.py (slow)
    tok_cfg = json.loads((tiny_llama_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and "chat_template" in tok_cfg
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"]
    assert list(tiny_llama_dir.glob("*.safetensors")) and not list(tiny_llama_dir.glob("*.bin"))
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(tiny_llama_dir)
    assert tok.decode(tok("a test")["input_ids"]) == "a test"


def test_tied_embeddings_counted_once(tiny_llama_dir):
    model, _ = load_ref(str(tiny_llama_dir))
    assert model.config.tie_word_embeddings
    total = sum(p.numel() for p in model.parameters())  # parameters() already dedups shared tensors
    assert count_params(model) == total


def test_ref_resolution(tmp_path):
    assert resolve_ref("builtin:smollm2-135m-instruct")[0] == "gguf"
    assert builtin_path("builtin:smollm2-135m-instruct").stat().st_size > 50_000_000
    assert resolve_ref("HuggingFaceTB/SmolLM2-360M") == ("hub", "HuggingFaceTB/SmolLM2-360M")
    with pytest.raises(InputError, match="unknown built-in"):
        resolve_ref("builtin:gpt-9")
    with pytest.raises(InputError, match="does not exist"):
        resolve_ref(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_ref(str(tmp_path / "empty"))


def test_builtin_config_reads_metadata_only():
    cfg = load_config("builtin:smollm2-135m-instruct")
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert 134_000_000 < config_params(cfg) < 135_000_000


def test_offline_hub_miss_is_clear():
    with pytest.raises(InputError, match="cannot load model"):
        load_ref("slmkit-test/does-not-exist")


def test_gguf_file_ref_loads_and_matches(tmp_path, tiny_llama_dir):
    """A .gguf model ref (here an F32 file slmkit wrote) loads through transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM

    from slmkit.quantize.config import GgufOptions
    from slmkit.quantize.gguf_writer import write_gguf

    path = tmp_path / "tiny.gguf"
    write_gguf(tiny_llama_dir, path, GgufOptions(type="F32"))
    model, tok = load_ref(str(path))
    assert model.config.num_hidden_layers == 4 and tok("hi")["input_ids"]
    assert getattr(model.config, "quantization_config", None) is None  # rebuilt: save_pretrained works
    ids = torch.tensor([tok("a small test sentence")["input_ids"]])
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, plain(ids).logits, atol=1e-5)
