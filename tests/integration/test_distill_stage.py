"""The distill stage through the real CLI on tiny models with the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slmkit.cli import app
from tests.conftest import make_tiny_model

runner = CliRunner()


def _recipe(tmp_path: Path, teacher: Path, stage: str, student: str = "{init: {from: teacher, keep_layers: [0, 2]}}"):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""\
name: tiny
output_dir: {tmp_path / "runs"}
teacher: {{model: {teacher}}}
student: {student}
data:
  train: {{path: builtin:prompts, max_samples: 6, max_length: 48}}
  eval: {{path: builtin:heldout, max_samples: 3, max_length: 48}}
stages:
  - distill: {{{stage}}}
""")
    return path


def _artifact(tmp_path: Path) -> Path:
    found = sorted((tmp_path / "runs/tiny").glob("distill/v*"))
    return found[-1] if found else None


BASE = "max_steps: 2, batch_size: 2, eval_every: 2, eval_examples: 3, precision: fp32"


@pytest.mark.parametrize("mode", [
    "data: off_policy, loss: {kind: jsd, ce_weight: 0.1, hidden: {kind: cosine}}",
    "data: sequence_kd, sequence_kd: {max_new_tokens: 6}",
    "data: offline_teacher, teacher_cache: {top_k: 8}",
    "on_policy: {fraction: 1.0, max_new_tokens: 6}",
])
def test_distill_modes_write_a_model_and_metrics(tmp_path, tiny_llama_dir, mode):
    r = runner.invoke(app, ["distill", str(_recipe(tmp_path, tiny_llama_dir, f"{BASE}, {mode}"))])
    assert r.exit_code == 0, r.output
    art = _artifact(tmp_path)
    assert (art / "model.safetensors").exists() and (art / "config.json").exists()
    lines = [json.loads(x) for x in (art / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and "eval_ce" in lines[-1]
    manifest = json.loads((art / "manifest.json").read_text())
    if "offline" in mode:
        assert manifest["details"]["teacher_seconds_saved"] >= 0
        assert list((tmp_path / "runs/_shared").glob("teacher-topk/v1/shard-00000.safetensors"))
    details = manifest["details"]
    assert details["tokens_trained"] > 0 and details["trained_tokens_per_s"] > 0
    if "sequence_kd" in mode:
        assert list((tmp_path / "runs/tiny").glob("distill-seqkd/v1/examples.jsonl"))
        assert details["sequence_kd"]["response_tokens"] > 0 and details["sequence_kd"]["generated_tokens_per_s"] > 0
    if "on_policy" in mode:
        assert all(x["on_policy"] for x in lines)
        assert details["on_policy"]["generated_tokens"] > 0 and details["on_policy"]["generated_tokens_per_s"] > 0


def test_max_steps_zero_is_an_input_error_with_no_artifact(tmp_path, tiny_llama_dir):
    r = runner.invoke(app, ["distill", str(_recipe(tmp_path, tiny_llama_dir, "max_steps: 0"))])
    assert r.exit_code == 2 and "max_steps" in r.output
    assert _artifact(tmp_path) is None


def test_padding_only_vocab_difference_is_aligned(tmp_path, tiny_llama_dir, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    rows = len(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)) + 64
    student = make_tiny_model(tmp_path / "student", smollm2_tokenizer_dir, num_hidden_layers=2, vocab_size=rows)
    r = runner.invoke(app, ["distill", str(_recipe(tmp_path, tiny_llama_dir, BASE, f"{{model: {student}}}"))])
    assert r.exit_code == 0, r.output
    manifest = json.loads((_artifact(tmp_path) / "manifest.json").read_text())
    assert manifest["details"]["vocab_rows"] == rows - 64


def test_batch_that_cannot_fit_is_refused_before_training(tmp_path, tiny_llama_dir):
    stage = "max_steps: 2, batch_size: 100000, max_length: 4096"
    r = runner.invoke(app, ["distill", str(_recipe(tmp_path, tiny_llama_dir, stage))])
    assert r.exit_code == 2 and "gradient_checkpointing" in r.output
    assert _artifact(tmp_path) is None


def test_offline_cache_reports_the_live_teachers_eval_kl_at_any_temperature(tmp_path, tiny_llama_dir):
    # with k = the whole vocabulary the fp32 cache is exact, so both modes train the same student and
    # must report the same eval KL; the eval KL is at T = 1 in both, whatever the loss temperature
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tiny_llama_dir))
    stage = "max_steps: 1, batch_size: 2, eval_every: 1, eval_examples: 3, precision: fp32, loss: {temperature: 2.0}"
    kls = {}
    for mode in ("off_policy", "offline_teacher"):
        where = tmp_path / mode
        where.mkdir()
        extra = f", teacher_cache: {{top_k: {vocab}, format: fp32}}" if mode == "offline_teacher" else ""
        r = runner.invoke(app, ["distill", str(_recipe(where, tiny_llama_dir, f"{stage}, data: {mode}{extra}"))])
        assert r.exit_code == 0, r.output
        kls[mode] = json.loads((_artifact(where) / "metrics.jsonl").read_text().splitlines()[-1])["eval_kl"]
    assert kls["off_policy"] > 0
    assert kls["offline_teacher"] == pytest.approx(kls["off_policy"], rel=1e-3)
