"""Every method on every supported architecture: prune, save, reload with plain transformers."""

from __future__ import annotations

import io

import pytest
import torch
from pydantic import TypeAdapter
from transformers import AutoModelForCausalLM

from slmkit.models import save_model
from slmkit.progress import Reporter
from slmkit.prune import PruneConfig
from slmkit.prune.stage import prune_model
from tests.prune_helpers import ARCHS, VOCAB, logits, random_examples, tiny_model

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
