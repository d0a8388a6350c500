"""The prune stage through the real CLI on a tiny model: artifact, metrics, plot, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from slmkit.cli import app
from slmkit.errors import InputError
from slmkit.progress import Reporter
from slmkit.prune import PruneConfig
from slmkit.prune.stage import prune_model
from tests.prune_helpers import random_examples, tiny_model

runner = CliRunner()


def _recipe(tmp_path: Path, teacher: Path, stage: str, train: str = "builtin:prompts") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""\
name: tiny
output_dir: {tmp_path / "runs"}
teacher: {{model: {teacher}}}
data:
  train: {{path: {train}, max_samples: 8, max_length: 48}}
  eval: {{path: builtin:heldout, max_samples: 4, max_length: 48}}
stages:
  - prune: {{{stage}, calibration_samples: 8, eval_samples: 4}}
""")
    return path


def test_osscar_stage_writes_model_metrics_and_plot(tmp_path, tiny_llama_dir):
    res = runner.invoke(
        app, ["prune", str(_recipe(tmp_path, tiny_llama_dir, "method: osscar, keep_ratio: 0.5"))]
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "tiny" / "prune" / "v1"
    manifest = json.loads((out / "manifest.json").read_text())
    metrics, details = manifest["metrics"], manifest["details"]
    assert metrics["params_after"]["mlp"] == metrics["params_before"]["mlp"] // 2
    assert metrics["perplexity_before"] > 1 and metrics["perplexity_after"] > 1
    assert len(metrics["layer_importance"]) == 4
    for errors, chosen in zip(details["reconstruction_error"], details["chosen"]):
        assert errors[chosen] <= min(errors["activation"], errors["activation_refit"])
    assert (out / "layer_importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.intermediate_size == 64


def test_sparsity_says_it_brings_no_cpu_speedup(tmp_path, tiny_llama_dir):
    res = runner.invoke(
        app, ["prune", str(_recipe(tmp_path, tiny_llama_dir, "method: sparsity, sparsity: 0.5"))]
    )
    assert res.exit_code == 0, res.output
    assert "dense CPU runtimes gain no speed" in res.output
    manifest = json.loads((tmp_path / "runs/tiny/prune/v1/manifest.json").read_text())
    assert manifest["details"]["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "stage,message",
    [
        ("method: width_mlp, keep_neurons: 1000", "intermediate_size is 128"),
        ("method: depth, remove_layers: 4", "at least 1 must remain"),
        ("method: width_mlp, target_params: 1M", "unreachable"),
    ],
)
def test_bad_targets_exit_2_without_artifact(tmp_path, tiny_llama_dir, stage, message):
    res = runner.invoke(app, ["prune", str(_recipe(tmp_path, tiny_llama_dir, stage))])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "runs" / "tiny" / "prune").exists()


def test_empty_calibration_data_is_an_input_error():
    model = tiny_model("llama")
    cfg = TypeAdapter(PruneConfig).validate_python({"method": "width_mlp", "keep_ratio": 0.5})
    with pytest.raises(InputError, match="calibration data is empty"):
        prune_model(model, cfg, [], [], 0, reporter=Reporter(io.StringIO()))


def test_calibration_is_checkpointed_and_reused(tmp_path):
    cfg = TypeAdapter(PruneConfig).validate_python({"method": "osscar", "keep_neurons": 32, "max_swaps": 4})
    log = io.StringIO()
    first = prune_model(
        tiny_model("qwen2"), cfg, random_examples(8), [], 0, reporter=Reporter(log), work_dir=tmp_path
    )
    assert (tmp_path / "calibration_stats.pt").exists() and (tmp_path / "osscar_layer_3.pt").exists()
    resumed = tiny_model("qwen2")
    # a resumed run must not need the calibration data again: the sums come from the work dir
    again = prune_model(
        resumed, cfg, random_examples(8, seed=99), [], 0, reporter=Reporter(log), work_dir=tmp_path
    )
    assert "reusing calibration statistics" in log.getvalue()
    assert again.details == first.details
    assert resumed.model.layers[0].mlp.down_proj.weight.shape == (64, 32)
    assert torch.isfinite(resumed.model.layers[0].mlp.down_proj.weight).all()
