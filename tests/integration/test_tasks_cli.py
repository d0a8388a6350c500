"""A ranking recipe end to end through the real CLI: tiny Llama scorer teacher, tiny BERT encoder student.

Covers the wiring of predictive tasks: `task:` in the recipe, score_kd distill, scorer ONNX export,
the scoring benchmark report, and bad input (exit 2, or notes in the report).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slmkit.cli import app
from tests.tasks_helpers import minilm_dir, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")
runner = CliRunner()

TASK = """\
task:
  kind: ranking
  template: "Query: {{context}}\\nCandidate: {{item}}\\nMatch:"
  primary_metric: ndcg@5
  kd: {{kind: listwise_kl, hard_label_weight: 0.5}}
  {extra}
"""


def ranking_rows(groups: int = 4, cands: int = 4, single: int = 0) -> list[dict]:
    src = Path(__file__).resolve().parents[2] / "slmkit" / "data_files" / "ranking_eval.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    keep = sorted({r["group"] for r in rows})[: groups + single]
    out = []
    for n, g in enumerate(keep):
        group = [r for r in rows if r["group"] == g]
        group = sorted(group, key=lambda r: -r["label"])[: 1 if n >= groups else cands]
        out += group
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("encoder")  # a bare encoder, as all-MiniLM-L6-v2 ships
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def recipe(tmp_path: Path, teacher: Path, student: Path, *, train: list[dict], evals: list[dict],
           extra: str = "", stages: str | None = None) -> Path:
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "eval.jsonl", evals)
    stages = stages or """\
  - distill: {method: score_kd, max_steps: 2, batch_size: 8, warmup_steps: 0, teacher_batch_size: 8}
  - export: {formats: [onnx]}
  - benchmark: {speed: {batch_sizes: [4]}}
"""
    path = tmp_path / "ranking.yaml"
    path.write_text(f"""\
name: rank
output_dir: {tmp_path / 'runs'}
teacher: {{model: {teacher}}}
student: {{model: {student}}}
{TASK.format(extra=extra)}
data:
  train: {{path: train.jsonl}}
  eval: {{path: eval.jsonl}}
stages:
{stages}""")
    return path


def test_ranking_recipe_end_to_end(tmp_path, tiny_llama_dir, encoder_dir):
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=ranking_rows(3), evals=ranking_rows(3, single=1))
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    res = runner.invoke(app, ["run", str(path), "--json"])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "rank"
    stages = {name: run / name / "v1" for name in ("distill", "export", "benchmark")}
    assert json.loads(res.stdout) == json.loads((stages["benchmark"] / "results.json").read_text())
    assert (stages["distill"] / "config.json").is_file()
    assert json.loads((stages["distill"] / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]  # the encoder got its scoring head and keeps it
    assert {p.name for p in (stages["export"] / "onnx").iterdir()} >= {"scorer.onnx", "scorer.int8.onnx"}
    results = json.loads((stages["benchmark"] / "results.json").read_text())
    assert (stages["benchmark"] / "report.html").is_file() and (stages["benchmark"] / "report.md").is_file()
    assert [m["id"] for m in results["models"]] == ["teacher", "rank/distill/v1", "rank/export/v1"]
    for m in results["models"]:
        q = m["variants"][0]["quality"]
        assert 0.0 <= q["auc"] <= 1.0 and 0.0 <= q["ndcg@5"] <= 1.0, q
    export_formats = [v["format"] for v in results["models"][2]["variants"]]
    assert export_formats == ["hf", "onnx", "onnx_int8"]
    assert any("single candidate" in n for n in results["models"][0]["variants"][0]["notes"])
    h = results["headline"]
    assert h["model"] == "rank/export/v1" and h["quality_retained"] is not None and h["scoring_speedup"] > 0
    assert 0 < h["params_ratio"] < 1
    assert "Scoring speed" in (stages["benchmark"] / "report.md").read_text()
    again = runner.invoke(app, ["run", str(path)])  # everything cached, teacher scores included
    assert again.exit_code == 0 and again.output.count("cached: reusing") == 3, again.output
    assert len(list((run / "teacher_scores").glob("v*"))) == 1


def test_gate_on_auc_fails_with_exit_3(tmp_path, tiny_llama_dir, encoder_dir):
    stages = """\
  - distill: {method: score_kd, max_steps: 1, batch_size: 8, warmup_steps: 0}
  - benchmark: {quality: [scoring], speed: {batch_sizes: [4]}, gates: {auc: ">=1.01"}}
"""
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=ranking_rows(2), evals=ranking_rows(2),
                  stages=stages)
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 3, res.output
    assert res.output.count("benchmark gate(s) failed") == 1 and res.output.count("auc = ") == 1, res.output
    reports = list((tmp_path / "runs").rglob("benchmark/v1/results.json"))
    assert len(reports) == 1  # the report artifact was committed before the run failed
    again = runner.invoke(app, ["run", str(path)])  # a cached report still fails its gate
    assert again.exit_code == 3 and "cached: reusing" in again.output, again.output


@pytest.mark.parametrize(
    "bad, message",
    [
        ("missing_item", "missing or empty item"),
        ("label", "is not one of the declared labels"),
        ("verbalizer", "not one"),
    ],
)
def test_bad_input_exits_2(tmp_path, tiny_llama_dir, encoder_dir, bad, message):
    train, extra = ranking_rows(2), ""
    if bad == "missing_item":
        del train[1]["item"]
    elif bad == "label":
        train[0]["label"] = 7
    else:
        extra = 'verbalizers: [" No", " Absolutely yes"]'
    stages = "  - distill: {method: score_kd, max_steps: 1, batch_size: 8}\n"
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=train, evals=ranking_rows(2), extra=extra,
                  stages=stages)
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not list((tmp_path / "runs" / "rank").glob("distill/v*"))


def test_task_and_method_mismatch_is_a_validation_error(tmp_path, tiny_llama_dir, encoder_dir):
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=ranking_rows(2), evals=ranking_rows(2),
                  stages="  - distill: {max_steps: 1}\n  - export: {formats: [gguf]}\n")
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == 2
    assert "method: score_kd" in res.output and "not ['gguf']" in res.output
    gen = tmp_path / "gen.yaml"
    gen.write_text(path.read_text().split("task:")[0] + "stages:\n  - distill: {method: score_kd}\n")
    res = runner.invoke(app, ["validate", str(gen)])
    assert res.exit_code == 2 and "task is generation" in res.output


def test_score_distill_runs_the_teacher_in_its_recipe_dtype_and_keys_the_cache_by_it(
        tmp_path, tiny_llama_dir, encoder_dir, monkeypatch):
    import torch

    from slmkit.tasks import stage

    loaded = []  # the real scorers the stage builds (a spy, not a stand-in)

    def spy(model_dir, task, dtype="float32"):
        scorer = real(model_dir, task, dtype)
        loaded.append(scorer)
        return scorer

    real = stage.load_scorer
    monkeypatch.setattr(stage, "load_scorer", spy)
    stages = "  - distill: {method: score_kd, max_steps: 1, batch_size: 8, warmup_steps: 0, teacher_batch_size: 8}\n"
    path = recipe(tmp_path, tiny_llama_dir, encoder_dir, train=ranking_rows(2), evals=ranking_rows(2), stages=stages)
    assert runner.invoke(app, ["run", str(path)]).exit_code == 0
    teacher, student = loaded
    assert next(teacher.model.parameters()).dtype == torch.float32
    assert next(student.model.parameters()).dtype == torch.float32  # fp32 master weights
    assert next(student.model.parameters()).device.type == "cpu"  # moved back for saving
    path.write_text(path.read_text().replace(f"teacher: {{model: {tiny_llama_dir}}}",
                                             f"teacher: {{model: {tiny_llama_dir}, dtype: bfloat16}}"))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert next(loaded[2].model.parameters()).dtype == torch.bfloat16  # the teacher scored in bf16
    assert len(list((tmp_path / "runs" / "rank" / "teacher_scores").glob("v*"))) == 2
