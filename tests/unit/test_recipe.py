"""Recipe schema: good recipes load, bad ones report every problem with its line, overrides apply."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from slmkit.errors import RecipeError
from slmkit.recipe import dump_recipe, load_recipe, parse_recipe

GOOD = """\
name: demo
seed: 3
teacher: {model: builtin:smollm2-135m-instruct}
data:
  train: {path: builtin:prompts, max_samples: 10}
  eval: {path: builtin:heldout}
stages:
  - prune: {method: depth, keep_layers: 20}
  - distill: {max_steps: 5}
  - distill: {name: onpolicy, max_steps: 5, input: prune}
  - export: {formats: [gguf]}
"""


def problems(text: str, **kw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        parse_recipe(textwrap.dedent(text), **kw)
    return e.value.problems


def test_good_recipe_defaults_and_names():
    r = parse_recipe(GOOD)
    assert [s.name for s in r.stages] == ["prune", "distill", "onpolicy", "export"]
    assert [s.kind for s in r.stages] == ["prune", "distill", "distill", "export"]
    assert r.stages[0].config.keep_layers == 20
    assert r.stages[2].input == "prune"
    assert r.output_dir == "runs" and r.teacher.dtype == "float32" and r.seed == 3
    assert r.data.train.max_samples == 10 and r.data.train.format == "chat"


def test_repeated_kind_gets_numbered_default_names():
    r = parse_recipe(GOOD.replace("{name: onpolicy, max_steps: 5, input: prune}", "{max_steps: 5}"))
    assert [s.name for s in r.stages] == ["prune", "distill", "distill_2", "export"]


def test_every_problem_reported_with_lines():
    bad = """\
    name: demo
    teacher: {model: builtin:smollm2-135m-instruct, dtype: int3}
    data:
      train: {path: missing.jsonl}
    stages:
      - prune: {method: depth, keep_layers: "many"}
      - quantize: {method: nope}
      - teleport: {}
      - export: {input: benchmark, colour: red}
      - benchmark: {}
    """
    found = problems(bad, base_dir=Path("/nonexistent"))
    text = "\n".join(found)
    assert len(found) == 7, text
    assert "teacher.dtype (line 2)" in text and "int3" in text
    assert "stages[0].prune.keep_layers (line 6)" in text
    assert "stages[1].quantize (line 7)" in text and "'nope'" in text
    assert "stages[2] (line 8): unknown stage kind 'teleport'" in text
    assert "stages[3].export.colour (line 9): unknown key" in text
    assert "stages[3].export.input (line 9): input 'benchmark' comes later" in text
    assert "data.train.path (line 4): data file 'missing.jsonl' does not exist" in text


def test_missing_data_file_named():
    found = problems(GOOD.replace("builtin:prompts", "nope/train.jsonl"), base_dir=Path("/tmp/nowhere"))
    assert len(found) == 1
    assert "data.train.path (line 5)" in found[0] and "nope/train.jsonl" in found[0]


def test_malformed_yaml_has_line():
    found = problems("name: x\nstages: [\n  - a: b\n")
    assert len(found) == 1 and "malformed YAML" in found[0] and "line" in found[0]


def test_not_a_mapping_and_missing_keys():
    assert "must be a YAML mapping" in problems("- just\n- a list\n")[0]
    found = problems("name: x\n")
    assert any(p.startswith("teacher") and "required" in p for p in found)
    assert any(p.startswith("stages") and "required" in p for p in found)


def test_unknown_stage_reference_and_duplicate_names():
    found = problems(GOOD.replace("input: prune", "input: nowhere").replace("name: onpolicy", "name: distill"))
    text = "\n".join(found)
    assert "input 'nowhere' is not a stage" in text
    assert "duplicate stage name 'distill'" in text


def test_unsafe_names_rejected():
    assert any("name" in p for p in problems(GOOD.replace("name: demo", "name: ../escape")))
    assert any("stage name" in p for p in problems(GOOD.replace("name: onpolicy", "name: ../up")))


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("SLMKIT_TEST_TEACHER", "builtin:smollm2-135m-instruct")
    r = parse_recipe(GOOD.replace("builtin:smollm2-135m-instruct", '"${SLMKIT_TEST_TEACHER}"'))
    assert r.teacher.model == "builtin:smollm2-135m-instruct"
    found = problems(GOOD.replace("builtin:smollm2-135m-instruct", '"${SLMKIT_UNSET_VAR_X}"'))
    assert "teacher.model (line 3): environment variable ${SLMKIT_UNSET_VAR_X} is not set" in found[0]


def test_overrides_by_index_name_and_kind():
    r = parse_recipe(GOOD, overrides=["seed=9", "stages.0.prune.keep_layers=12",
                                      "stages.onpolicy.max_steps=7", "teacher.dtype=bfloat16",
                                      "stages.export.formats=[hf, gguf]"])
    assert r.seed == 9 and r.stages[0].config.keep_layers == 12 and r.stages[2].config.max_steps == 7
    assert r.teacher.dtype == "bfloat16" and r.stages[3].config.formats == ["hf", "gguf"]


def test_bad_overrides_are_errors():
    found = problems(GOOD, overrides=["seed", "stages.nosuch.x=1", "stages.prune.keep_layers=abc"])
    text = "\n".join(found)
    assert "--set 'seed': expected key.path=value" in text
    assert "no list entry or stage named 'nosuch'" in text
    assert "stages[0].prune.keep_layers (line 8)" in text


def test_dump_round_trips():
    r = parse_recipe(GOOD)
    again = parse_recipe(dump_recipe(r))
    assert again.model_dump() == r.model_dump()


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(RecipeError, match="UTF-8"):
        load_recipe(bad)


def test_every_shipped_recipe_validates():
    root = Path(__file__).resolve().parents[2] / "recipes"
    recipes = sorted(root.rglob("*.yaml"))
    assert recipes, "the repository ships recipes"
    for path in recipes:
        recipe = load_recipe(path)
        first = path.read_text().splitlines()[0]
        assert first.startswith("#") and "slmkit" in first, f"{path} must start with the command that runs it"
        assert recipe.stages


def test_recipe_reference_doc_is_current():
    from slmkit.docgen import recipe_reference

    doc = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
    assert doc.read_text() == recipe_reference(), "regenerate with: python -m slmkit.docgen > docs/recipes.md"


def test_input_may_name_the_sources_and_reserved_names_are_refused():
    r = parse_recipe(GOOD.replace("input: prune", "input: teacher"))
    assert r.stages[2].input == "teacher"
    found = problems(GOOD.replace("name: onpolicy", "name: source"))
    assert any("reserved" in p for p in found)


@pytest.mark.parametrize("recipe", ["recipes/quickstart.yaml", "recipes/ranking-quickstart.yaml"])
def test_validate_never_imports_torch(recipe):
    # a fresh process: other tests of this session have imported torch already
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys\nfrom slmkit.cli import main\nsys.argv = ['slmkit', 'validate', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(root / recipe)], capture_output=True, text=True,
                         check=False, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout and "torch imported: False" in out.stdout, out.stdout


def test_calibrated_export_without_data_is_refused_at_validation():
    text = textwrap.dedent("""\
        name: r
        teacher: {model: builtin:smollm2-135m-instruct}
        stages:
          - export: {formats: [onnx], onnx: {calibration: quantease}}
    """)
    found = problems(text)
    assert any("stages[0].export.onnx.calibration" in p and "needs calibration data" in p for p in found), found
    parse_recipe(text.replace("calibration: quantease", "calibration: rtn"))  # no data needed for rtn


@pytest.mark.parametrize("stages, data, where, fix", [
    ("- prune: {method: depth, keep_layers: 2}", "train: {path: builtin:prompts}",
     "stages[0].prune.eval_samples", "set eval_samples: 0 or add data.eval"),
    ("- prune: {method: depth, keep_layers: 2, eval_samples: 0}", "eval: {path: builtin:heldout}",
     "stages[0].prune", "prune needs calibration data"),
    ("- distill: {max_steps: 2}", "eval: {path: builtin:heldout}", "stages[0].distill", "add data.train"),
    ("- benchmark: {}", "train: {path: builtin:prompts}", "stages[0].benchmark.quality", "set quality: []"),
    ("- benchmark: {primary_metric: rouge_l}", "eval: {path: builtin:prompts, format: text, text_field: source}",
     "stages[0].benchmark.primary_metric", "use primary_metric: perplexity"),
])
def test_a_stage_missing_its_data_is_named_with_the_fix(stages, data, where, fix):
    text = f"name: r\nteacher: {{model: builtin:smollm2-135m-instruct}}\ndata:\n  {data}\nstages:\n  {stages}\n"
    found = problems(text)
    assert any(p.startswith(where) and fix in p for p in found), found
