"""The finetune stage through the real CLI: the fine-tuned model becomes the teacher of later stages
(distillation targets, the benchmark's teacher row, cache keys, the dry-run plan), bad inputs exit 2
with nothing written, and a generation recipe fine-tunes on its responses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slmkit.cli import app
from tests.integration.test_tasks_cli import encoder_dir, ranking_rows, recipe  # noqa: F401
from tests.tasks_helpers import single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
runner = CliRunner()

STAGES = """\
  - finetune: {method: lora, r: 4, max_steps: 3, batch_size: 8, warmup_steps: 0, lr: 1.0e-2}
  - distill: {method: score_kd, max_steps: 2, batch_size: 8, warmup_steps: 0, teacher_batch_size: 8}
  - benchmark: {speed: {batch_sizes: [4]}}
"""


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_the_finetuned_scorer_is_the_teacher_of_later_stages(tmp_path, tiny_llama_dir, encoder_dir):  # noqa: F811
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=ranking_rows(3), evals=ranking_rows(3), stages=STAGES)
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    plan = json.loads(runner.invoke(app, ["run", str(path), "--dry-run", "--json"]).stdout)["plan"]
    assert [(r["stage"], r["input"]) for r in plan] == [("source", str(tiny_llama_dir)), ("finetune", "source"),
                                                        ("distill", "student"), ("benchmark", "distill")]
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "rank"
    tuned, distilled, bench = run / "finetune" / "v1", run / "distill" / "v1", run / "benchmark" / "v1"
    assert "is the teacher of the stages after it" in res.output
    inputs = {i["role"]: i for i in manifest(tuned)["inputs"]}
    assert inputs["input"]["path"] == str(run / "source" / "v1")  # the first fine-tune read the teacher
    inputs = {i["role"]: i for i in manifest(distilled)["inputs"]}
    assert inputs["teacher"]["path"] == str(tuned) and inputs["input"]["path"] == str(run / "student" / "v1")
    results = json.loads((bench / "results.json").read_text())
    assert [(m["id"], m["path"]) for m in results["models"]] == [("teacher", str(tuned)),
                                                                  ("rank/distill/v1", str(distilled))]
    assert json.loads((tuned / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert "baselines" in results and results["headline"]["baseline"] is not None

    again = runner.invoke(app, ["run", str(path)])
    assert again.exit_code == 0 and again.output.count("cached: reusing") == 3, again.output
    planned = json.loads(runner.invoke(app, ["run", str(path), "--dry-run", "--json"]).stdout)["plan"]
    assert [r["output"].split()[0] for r in planned] == ["reuse"] * 4
    other = ["run", str(path), "--dry-run", "--json", "--set", "stages.finetune.max_steps=4"]
    planned = json.loads(runner.invoke(app, other).stdout)["plan"]  # another teacher: everything after it is new
    assert [r["output"].split()[0] for r in planned] == ["reuse", "new", "new", "new"]
    only = runner.invoke(app, ["distill", str(path)])  # one kind: the latest fine-tuned teacher still teaches
    assert only.exit_code == 0 and "cached: reusing" in only.output, only.output
    changed = runner.invoke(app, ["run", str(path), "--set", "stages.finetune.max_steps=4"])
    assert changed.exit_code == 0, changed.output
    assert manifest(run / "distill" / "v2")["inputs"][1]["path"] == str(run / "finetune" / "v2")
    assert len(list((run / "teacher_scores").glob("v*"))) == 2  # keyed by the teacher that scored


def test_as_teacher_false_keeps_the_source_teacher(tmp_path, tiny_llama_dir, encoder_dir):  # noqa: F811
    stages = STAGES.replace("lr: 1.0e-2}", "lr: 1.0e-2, as_teacher: false}").replace(
        "  - distill: {", "  - distill: {input: student, ")
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=ranking_rows(2), evals=ranking_rows(2),
                  stages=stages.replace("  - benchmark: {speed: {batch_sizes: [4]}}\n", ""))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "rank"
    assert manifest(run / "distill" / "v1")["inputs"][1]["path"] == str(run / "source" / "v1")


@pytest.mark.parametrize("bad, message, at", [
    ("no_train", "finetune trains on labelled data: add data.train", "validate"),
    ("label", "is not one of the declared labels", "run"),
    ("unlabelled", "missing label (column 'label')", "run"),
    ("lora_target", "LoRA target module(s) ['query'] are not linear layers of a llama model", "validate"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_llama_dir, encoder_dir, bad, message, at):  # noqa: F811
    train, stages = ranking_rows(2), "  - finetune: {method: lora, max_steps: 2, batch_size: 8}\n"
    if bad == "label":
        train[3]["label"] = 7
    elif bad == "unlabelled":
        del train[2]["label"]
    elif bad == "lora_target":
        stages = "  - finetune: {method: lora, max_steps: 2, target_modules: [query, q_proj]}\n"
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=train, evals=ranking_rows(2), stages=stages)
    if bad == "no_train":
        path.write_text(path.read_text().replace("  train: {path: train.jsonl}\n", ""))
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == (2 if at == "validate" else 0), res.output
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2 and message in res.output, res.output
    if bad == "lora_target":
        assert "'q_proj'" in res.output  # the message lists the layers that exist
    runs = tmp_path / "runs" / "rank"
    assert not list(runs.glob("finetune/v*")) and not list(runs.rglob("finetune.pt"))


def test_generation_recipe_finetunes_on_responses_and_teaches_the_distill_stage(tmp_path, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    path = tmp_path / "gen.yaml"
    path.write_text(f"""\
name: gen
output_dir: {tmp_path / 'runs'}
teacher: {{model: {tiny_llama_dir}}}
student: {{init: {{from: teacher, keep_layers: [0, 1]}}}}
data:
  train: {{path: builtin:prompts, max_samples: 8, max_length: 48}}
stages:
  - finetune: {{method: lora, r: 4, max_steps: 4, batch_size: 8, lr: 3.0e-3, warmup_steps: 0, max_length: 48}}
  - distill: {{max_steps: 2, batch_size: 4, max_length: 48, compile_layers: false, eval_every: 2}}
""")
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "gen"
    tuned = run / "finetune" / "v1"
    lines = [json.loads(x) for x in (tuned / "metrics.jsonl").read_text().splitlines()]
    # every step sees all 8 examples: the same data, so the loss must fall
    assert len(lines) == 4 and lines[-1]["ce"] < lines[0]["ce"] and lines[0]["kd"] == 0.0
    assert manifest(tuned)["details"]["method"] == "lora"
    model = AutoModelForCausalLM.from_pretrained(tuned)  # merged: plain weights, no adapters
    assert not [n for n, _ in model.named_parameters() if "lora" in n]
    assert manifest(run / "distill" / "v1")["inputs"][1]["path"] == str(tuned)
