"""The CLI end to end on a tiny model: validate, dry run, run, cache reuse, --force, runs, show, init, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slmkit.cli import app

runner = CliRunner()


def recipe_file(tmp_path: Path, teacher: Path, body: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""\
name: tiny
output_dir: {tmp_path / 'runs'}
teacher: {{model: {teacher}}}
data:
  train: {{path: builtin:prompts, max_samples: 8, max_length: 48}}
  eval: {{path: builtin:heldout, max_samples: 4, max_length: 48}}
stages:
  - prune: {{method: depth, keep_layers: 2, calibration_samples: 8, eval_samples: 4}}
{body}""")
    return path


def test_validate_ok_and_bad(tmp_path, tiny_llama_dir):
    good = recipe_file(tmp_path, tiny_llama_dir)
    res = runner.invoke(app, ["validate", str(good)])
    assert res.exit_code == 0 and "valid (1 stages: prune)" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("keep_layers: 2", "keep_layers: 2, colour: red")
                   .replace("max_samples: 8", "max_samples: -1"))
    res = runner.invoke(app, ["validate", str(bad), "--json"])
    assert res.exit_code == 2
    problems = json.loads(res.stdout)["problems"]
    assert len(problems) == 2 and any("colour (line 8)" in p for p in problems)
    assert not (tmp_path / "runs").exists()


def test_set_override_is_validated(tmp_path, tiny_llama_dir):
    good = recipe_file(tmp_path, tiny_llama_dir)
    res = runner.invoke(app, ["validate", str(good), "--set", "stages.prune.keep_layers=zero"])
    assert res.exit_code == 2 and "keep_layers" in res.output


def test_dry_run_plans_without_writing(tmp_path, tiny_llama_dir):
    path = recipe_file(tmp_path, tiny_llama_dir)
    res = runner.invoke(app, ["run", str(path), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)["plan"]
    assert [r["stage"] for r in plan] == ["source", "prune"]
    assert plan[1]["params"] < plan[0]["params"]
    assert plan[1]["output"] == f"new {tmp_path / 'runs/tiny/prune'}/v1"
    assert not (tmp_path / "runs").exists()


def test_run_cache_force_runs_show(tmp_path, tiny_llama_dir):
    path = recipe_file(tmp_path, tiny_llama_dir)
    first = runner.invoke(app, ["run", str(path), "--json"])
    assert first.exit_code == 0, first.output
    stages = json.loads(first.stdout)["stages"]
    assert stages[0]["cached"] is False and stages[0]["path"].endswith("prune/v1")
    planned = json.loads(runner.invoke(app, ["run", str(path), "--dry-run", "--json"]).stdout)["plan"]
    assert [r["output"].split()[0] for r in planned] == ["reuse", "reuse"]  # the dry run sees the cache hits
    second = runner.invoke(app, ["run", str(path), "--json"])
    assert json.loads(second.stdout)["stages"][0]["cached"] is True
    forced = runner.invoke(app, ["prune", str(path), "--force", "--json"])
    assert json.loads(forced.stdout)["stages"][0]["path"].endswith("prune/v2")
    changed = runner.invoke(app, ["run", str(path), "--set", "stages.prune.keep_layers=3", "--json"])
    assert json.loads(changed.stdout)["stages"][0]["path"].endswith("prune/v3")

    listing = json.loads(runner.invoke(app, ["runs", str(tmp_path / "runs"), "--json"]).stdout)
    assert sorted(r["id"] for r in listing) == ["tiny/prune/v1", "tiny/prune/v2", "tiny/prune/v3", "tiny/source/v1"]
    assert {r["parent"] for r in listing if r["stage"] == "prune"} == {"tiny/source/v1"}
    shown = json.loads(runner.invoke(app, ["show", str(tmp_path / "runs/tiny/prune/v3"), "--json"]).stdout)
    assert [c["id"] for c in shown["lineage"]] == ["tiny/prune/v3", "tiny/source/v1"]
    m = shown["manifest"]
    assert m["config"]["config"]["keep_layers"] == 3 and m["seed"] == 0
    assert {"slmkit", "torch", "transformers"} <= set(m["versions"]) and m["hardware"]["cpu"]["logical_cores"]
    assert all(len(h) == 64 for h in m["files"].values())
    card = (tmp_path / "runs/tiny/prune/v3/README.md").read_text()
    assert "tiny/source/v1" in card and "from_pretrained" in card
    assert "history: the recipe that made the input tiny/source/v1" in (tmp_path / "runs/tiny/prune/v3/recipe.yaml").read_text()


def test_dry_run_sees_cache_hits_of_a_recipe_with_a_student(tmp_path, tiny_llama_dir):
    path = recipe_file(tmp_path, tiny_llama_dir)
    path.write_text(path.read_text().replace(
        "stages:\n", "student: {init: {from: teacher, keep_layers: [0, 1, 2]}}\nstages:\n"))
    before = json.loads(runner.invoke(app, ["run", str(path), "--dry-run", "--json"]).stdout)["plan"]
    assert before[1]["input"] == "student" and before[1]["output"].startswith("new ")
    first = runner.invoke(app, ["run", str(path), "--json"])
    assert first.exit_code == 0, first.output
    planned = json.loads(runner.invoke(app, ["run", str(path), "--dry-run", "--json"]).stdout)["plan"]
    assert [r["output"].split()[0] for r in planned] == ["reuse", "reuse"]
    assert planned[1]["output"] == f"reuse {json.loads(first.stdout)['stages'][0]['path']}"
    # another student is another student artifact: what follows it is new again
    other = runner.invoke(app, ["run", str(path), "--dry-run", "--json", "--set", "student.init.keep_layers=[0,1]"])
    assert json.loads(other.stdout)["plan"][1]["output"].startswith("new ")


def test_stage_command_without_that_stage_is_usage_error(tmp_path, tiny_llama_dir):
    path = recipe_file(tmp_path, tiny_llama_dir)
    res = runner.invoke(app, ["distill", str(path)])
    assert res.exit_code == 2 and "has no `distill` stage" in res.output


def test_stage_command_input_must_exist(tmp_path, tiny_llama_dir):
    path = recipe_file(tmp_path, tiny_llama_dir)
    res = runner.invoke(app, ["prune", str(path), "--input", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "is not a directory" in res.output


def test_runtime_input_error_leaves_no_artifact(tmp_path, tiny_llama_dir):
    path = recipe_file(tmp_path, tiny_llama_dir)
    res = runner.invoke(app, ["run", str(path), "--set", "stages.prune.keep_layers=9"])
    assert res.exit_code == 2 and "error:" in res.output
    assert not (tmp_path / "runs/tiny/prune").exists()
    assert not list((tmp_path / "runs/tiny/.tmp").iterdir())


def test_init_writes_a_valid_starter(tmp_path):
    target = tmp_path / "mine.yaml"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    assert runner.invoke(app, ["validate", str(target)]).exit_code == 0
    assert target.read_text().startswith(f"# slmkit run {target}")
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2 and "exists" in again.output


def test_installed_entry_point_subprocess(tmp_path, tiny_llama_dir):
    exe = shutil.which("slmkit", path=str(Path(sys.executable).parent)) or shutil.which("slmkit")
    assert exe, "the slmkit console script is installed"
    path = recipe_file(tmp_path, tiny_llama_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([exe, "validate", str(path)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = subprocess.run([exe, "validate", str(tmp_path / "missing.yaml")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "file not found" in bad.stderr
    usage = subprocess.run([exe, "run"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
    piped = subprocess.run([exe, "run", str(path)], capture_output=True, text=True, env=env)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout and "prune: params" in piped.stdout  # plain lines when not a TTY


@pytest.mark.parametrize("module", ["slmkit"])
def test_python_dash_m(module, tmp_path):
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "distill" in res.stdout


@pytest.mark.slow
def test_accelerate_launch_two_processes_write_one_artifact_each(tmp_path, tiny_llama_dir):
    """Under `accelerate launch`, rank 0 converts and commits; the other rank trains and follows."""
    exe = Path(sys.executable).parent / "accelerate"
    path = recipe_file(tmp_path, tiny_llama_dir, "  - distill: {max_steps: 2, batch_size: 2, eval_every: 2, "
                                                 "eval_examples: 2, checkpoint_every: 2, precision: fp32}\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([str(exe), "launch", "--num_processes", "2", "--cpu", "-m", "slmkit", "run", str(path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = tmp_path / "runs" / "tiny"
    for stage in ("source", "prune", "distill"):
        assert sorted(p.name for p in (runs / stage).iterdir()) == ["v1"], stage
    assert not list((runs / ".tmp").iterdir())
